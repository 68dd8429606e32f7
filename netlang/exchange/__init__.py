"""Exchange with other tools through ONNX: ``netlang export`` and ``netlang import``.

``export`` translates a network's inference graph into ONNX nodes (``export.py``), ``import``
turns an ONNX model back into a readable ``.net`` spec and a checkpoint (``import_onnx.py``).
Both describe models with plain Python values; ``onnx_lib.py`` is the one module that
imports the ``onnx`` and ``onnxruntime`` packages (the optional extra ``netlang[onnx]``).
"""
