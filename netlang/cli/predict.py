"""netlang predict FILE --checkpoint C --input X.npy: a trained network's outputs for new data.

    netlang predict specs/mnist.net --checkpoint runs/mnist/last.ckpt --input digits.npy
    netlang predict specs/mnist.net --checkpoint runs/mnist/last.ckpt --input digits.npy \\
        --fetch probs --output probs.npy

The input holds examples as the data set stores them (MNIST: uint8 pixels, 28x28 or 784
per example); the checkpoint's normalization is applied unless --no-normalize is given.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

import netlang
from netlang.cli import add_device_arguments
from netlang.cli.arrays import read_npy
from netlang.errors import UsageError
from netlang.runtime.checkpoint import replace_atomically
from netlang.train.feeding import features_feeder
from netlang.train.inference import restore_for_inference
from netlang.train.metrics import predict

HELP = "run a trained network on examples from a .npy file (prints or saves the outputs)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="the .net spec the checkpoint was trained from")
    parser.add_argument("--checkpoint", required=True, metavar="C", help="a checkpoint file")
    parser.add_argument("--input", required=True, metavar="X.npy",
                        help="examples, one per row along the first axis")
    parser.add_argument("--output", metavar="Y.npy",
                        help="save the outputs (.npy for one, .npz for several)")
    parser.add_argument("--fetch", action="append", metavar="NAME",
                        help="an output to compute (repeatable; default: every output that "
                             "needs only the input)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="feed the input as it is (it is already normalized)")
    parser.add_argument("--batch", type=int, default=500)
    add_device_arguments(parser)


def load_input(path: str) -> np.ndarray:
    x = read_npy(path, "--input", hint="save the examples with numpy.save(path, array)")
    if x.ndim == 0:
        raise UsageError(f"--input '{path}' holds a scalar; give one example per row")
    return x


def default_fetches(graph, x_name: str) -> list[str]:
    """Outputs (not loss or metrics) computable from the first input alone."""
    x_id = graph.inputs[x_name]
    other = {nid for name, nid in graph.inputs.items() if nid != x_id}
    return [name for name, nid in graph.outputs.items()
            if name != graph.loss and name not in graph.metrics
            and not (graph.ancestors([nid]) & other)]


def show(name: str, value: np.ndarray) -> str:
    with np.printoptions(precision=4, suppress=True, threshold=200, edgeitems=5):
        return f"{name} ({value.dtype}{list(value.shape)}):\n{value}"


def run(args) -> int:
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    model = netlang.compile(args.file)
    restored = restore_for_inference(model, args.checkpoint, args.device, args.kernels)
    for note in restored.notes:
        print(note, file=sys.stderr)
    x = load_input(args.input)
    if restored.normalizer is not None and not args.no_normalize:
        x = restored.normalizer(x)
    feeder = features_feeder(model.graph, x, Path(args.input).name)
    fetches = args.fetch or default_fetches(model.graph, feeder.x_name)
    if not fetches:
        raise UsageError("the network has no output that needs only its first input",
                         hint="name one with --fetch")
    if args.output:
        check_output_name(Path(args.output), fetches)
    outputs = predict(restored.session, feeder, x, fetches, args.batch)
    if args.output:
        save(Path(args.output), outputs)
        print(f"saved {', '.join(outputs)} for {len(x)} examples to {args.output}")
    else:
        for name, value in outputs.items():
            print(show(name, value))
    return 0


def check_output_name(path: Path, fetches: list[str]) -> None:
    """--output must say its format: .npy for one output, .npz for one or several."""
    if path.suffix == ".npz" or (path.suffix == ".npy" and len(fetches) == 1):
        return
    if len(fetches) == 1:
        raise UsageError(f"--output '{path}': name the file .npy (or .npz)")
    raise UsageError(f"--output '{path}': {len(fetches)} outputs ({', '.join(fetches)}) "
                     f"go to one .npz file", hint="name it .npz, or pick one with --fetch")


def save(path: Path, outputs: dict[str, np.ndarray]) -> None:
    """Write the outputs to exactly ``path``, atomically (a temporary file in the same folder
    renamed over it, so an earlier file there stays whole if anything fails), with the mode
    the user's umask gives."""
    buffer = io.BytesIO()
    if path.suffix == ".npy":
        np.save(buffer, next(iter(outputs.values())))
    else:
        np.savez(buffer, **{k.replace("/", "_"): v for k, v in outputs.items()})
    try:
        replace_atomically(path, buffer.getvalue())
    except OSError as err:
        raise UsageError(f"--output: cannot write '{path}': {err.strerror or err}") from None
