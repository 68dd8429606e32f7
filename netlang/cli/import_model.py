"""netlang import MODEL.onnx -o model.net: an ONNX model as a readable spec and a checkpoint.

    netlang import mnist.onnx -o mnist.net                  # weights in mnist.ckpt
    netlang import resnet.onnx -o resnet.net --checkpoint weights/resnet.ckpt
    netlang predict resnet.net --checkpoint weights/resnet.ckpt --input x.npy --no-normalize

Layers are written where a node pattern is one (Conv -> conv2d, Gemm -> dense,
BatchNormalization -> batchnorm), primitives otherwise; the spec keeps the model's input and
output names, shapes and layout (an NCHW model gets a transpose to netlang's NHWC after its
input).  Before anything is written, the spec is compiled, the weights loaded, and its
outputs compared with onnxruntime's on random inputs (--no-check skips that).  A model with
nodes that do not map is refused, with every such node listed.
"""
from __future__ import annotations

from pathlib import Path

from netlang.errors import UsageError
from netlang.exchange import onnx_lib
from netlang.exchange.import_onnx import (
    build_session,
    import_model,
    largest_difference,
    mapped_op_types,
    random_feeds,
)
from netlang.runtime.checkpoint import replace_atomically

HELP = "turn an ONNX model into a .net spec and a checkpoint of its weights"
TOLERANCE = 1e-4


def add_arguments(parser) -> None:
    parser.epilog = "ONNX ops that import: " + ", ".join(mapped_op_types())
    parser.add_argument("model", help="the ONNX file")
    parser.add_argument("-o", "--out", required=True, metavar="SPEC.net",
                        help="the spec to write")
    parser.add_argument("--checkpoint", metavar="C",
                        help="where the weights go (default: the spec's name with .ckpt)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip comparing the imported network with onnxruntime")


def run(args) -> int:
    out = Path(args.out)
    if out.suffix != ".net":
        raise UsageError(f"-o '{out}': name the file .net")
    ckpt = Path(args.checkpoint) if args.checkpoint else out.with_suffix(".ckpt")
    for path in (out, ckpt):
        if not path.parent.is_dir():
            raise UsageError(f"'{path}': the folder '{path.parent}' does not exist")
    described = onnx_lib.read(args.model)
    imported = import_model(described)
    _, session = build_session(imported, str(out))
    note = ""
    if not args.no_check:
        feeds = random_feeds(described)
        reference = onnx_lib.run(args.model, feeds)
        worst = largest_difference(session, imported, reference, feeds)
        if not worst <= TOLERANCE:
            raise UsageError(
                f"the imported network's outputs differ from onnxruntime's by {worst:.3g} "
                "(relative) on random inputs, so nothing was written (a bug in netlang "
                "import)", hint="--no-check writes the spec anyway, for a look at it")
        note = f"; outputs equal onnxruntime's on random inputs (largest difference " \
               f"{worst:.1e})"
    try:
        replace_atomically(out, imported.spec.encode())
    except OSError as err:
        raise UsageError(f"-o: cannot write '{out}': {err.strerror or err}") from None
    session.save(ckpt, {"imported_from": Path(args.model).name})
    print(f"wrote {out} ({len(described.nodes)} ONNX nodes) and "
          f"{ckpt} ({len(imported.arrays)} arrays){note}")
    return 0
