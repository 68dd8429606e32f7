"""netlang export FILE -o model.onnx: the network's inference graph as an ONNX model.

    netlang export specs/mnist.net --checkpoint runs/mnist/last.ckpt -o mnist.onnx
    netlang export specs/residual.net -o residual.onnx --opset 18 --batch 1
    netlang export specs/srcnn.net --checkpoint runs/srcnn/last.ckpt -o srcnn.onnx \\
        --fetch prediction

The model computes the spec's outputs but the loss and metrics (or those named with
--fetch) from its inputs, in eval mode: batchnorm with its moving statistics (folded into
the convolution before it), no dropout.  Inputs and outputs keep netlang's NHWC layout and
names; the batch dim N stays dynamic unless --batch fixes it.  Without --checkpoint the
weights are the spec's initial values (its seed).  Inputs are fed as the network takes them:
a training checkpoint's data normalization is recorded in the model's metadata
(``normalization``), not applied.  Needs the ONNX extra: pip install 'netlang[onnx]'.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import netlang
from netlang.errors import UsageError
from netlang.exchange import onnx_lib
from netlang.exchange.export import export_model, mapped_ops
from netlang.exchange.graph import DEFAULT_OPSET, MIN_OPSET
from netlang.runtime.checkpoint import replace_atomically
from netlang.train.inference import restore_for_inference

HELP = "write a network's inference graph as an ONNX model (for onnxruntime, Netron, ...)"


def add_arguments(parser) -> None:
    parser.epilog = "ops that export: " + ", ".join(mapped_ops())
    parser.add_argument("file", help="the .net spec")
    parser.add_argument("-o", "--out", required=True, metavar="MODEL.onnx",
                        help="the ONNX file to write (replaced atomically)")
    parser.add_argument("--checkpoint", metavar="C",
                        help="take the weights from this checkpoint (default: the spec's "
                             "initial values)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset version (default {DEFAULT_OPSET}; "
                             f"{MIN_OPSET} to what the installed onnx knows)")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="fix the batch dimension N (default: dynamic)")
    parser.add_argument("--fetch", action="append", metavar="NAME",
                        help="an output to export (repeatable; default: every output but "
                             "the loss and metrics)")
    parser.add_argument("--keep-batchnorm", action="store_true",
                        help="keep batchnorms after convolutions as BatchNormalization "
                             "nodes instead of folding them into the convolution")


def run(args) -> int:
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    out = Path(args.out)
    if out.suffix != ".onnx":
        raise UsageError(f"-o '{out}': name the file .onnx")
    if not out.parent.is_dir():
        raise UsageError(f"-o '{out}': the folder '{out.parent}' does not exist")
    top = onnx_lib.max_opset()          # also says what to install when onnx is missing
    if not MIN_OPSET <= args.opset <= top:
        raise UsageError(f"--opset {args.opset} is not supported",
                         hint=f"give {MIN_OPSET} to {top}")
    model = netlang.compile(args.file)
    metadata = {"netlang_spec": Path(args.file).name}
    if args.checkpoint:
        restored = restore_for_inference(model, args.checkpoint)
        for note in restored.notes:
            print(note, file=sys.stderr)
        metadata["netlang_checkpoint"] = Path(args.checkpoint).name
        if restored.normalizer is not None:
            norm = restored.normalizer
            metadata["normalization"] = json.dumps(
                {"formula": "(x - mean) / scale", "mean": _listed(norm.mean),
                 "scale": float(norm.scale)})
        session = restored.session
    else:
        seed = int((model.graph.spec.train or {}).get("seed", 0) or 0)
        session = model.session(seed=seed)
        print(f"note: no --checkpoint, so the weights are the spec's initial values "
              f"(seed {seed})", file=sys.stderr)
    described = export_model(model, session.state.to_numpy(), args.fetch, args.opset,
                             args.batch, not args.keep_batchnorm, top, metadata)
    data = onnx_lib.checked_bytes(described)
    try:
        replace_atomically(out, data)
    except OSError as err:
        raise UsageError(f"-o: cannot write '{out}': {err.strerror or err}") from None
    inputs = ", ".join(f"{v.name} [{','.join(map(str, v.shape))}]" for v in described.inputs)
    outputs = ", ".join(v.name for v in described.outputs)
    print(f"wrote {out} (opset {described.opset}, {len(described.nodes)} nodes, "
          f"{len(data) / 1024:,.0f} KiB): inputs {inputs}; outputs {outputs}")
    return 0


def _listed(mean):
    try:
        return float(mean)
    except TypeError:
        return "per-feature array (see the checkpoint)"
