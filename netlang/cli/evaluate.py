"""netlang eval FILE --checkpoint C: the loss and metrics of a trained network on a split.

    netlang eval specs/mnist.net --checkpoint runs/mnist/last.ckpt
    netlang eval specs/spiral.net --checkpoint runs/spiral/last.ckpt --split train
    netlang eval specs/srcnn.net --checkpoint runs/srcnn/last.ckpt    # also prints PSNR
"""
from __future__ import annotations

import math
import sys

import numpy as np

import netlang
from netlang.cli import add_device_arguments
from netlang.errors import UsageError
from netlang.runtime.backend import cpu_set_up_beside, kernel_list_name, remember_cpu_kernels
from netlang.runtime.checkpoint import network_hash
from netlang.train.config import train_config
from netlang.train.data import load_dataset
from netlang.train.feeding import make_feeder
from netlang.train.inference import (
    image_peak,
    image_values,
    psnr_against_input,
    renormalize,
    restore_for_inference,
)
from netlang.train.metrics import evaluate

HELP = "measure a trained network's loss and metrics (test split by default)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="the .net spec the checkpoint was trained from")
    parser.add_argument("--checkpoint", required=True, metavar="C",
                        help="a checkpoint file (runs/<spec-name>/last.ckpt)")
    parser.add_argument("--split", default="test", choices=["test", "validation", "train"])
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the data set's files (or set NETLANG_DATA)")
    parser.add_argument("--batch", type=int, default=500, help="examples per eval batch")
    add_device_arguments(parser)


def run(args) -> int:
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    model = netlang.compile(args.file)
    config = train_config(model.graph.spec.train, model.graph.name)
    restored = restore_for_inference(model, args.checkpoint, args.device, args.kernels)
    for note in restored.notes:
        print(note, file=sys.stderr)
    data_args = dict(config.data.args)
    if restored.normalizer is not None:
        data_args["normalize"] = "none"
    warm_set = kernel_list_name("eval", network_hash(model.graph), args.batch, args.kernels)
    with cpu_set_up_beside(args.device, args.kernels, warm_set):   # Numba set up meanwhile
        dataset = load_dataset(config.data.name, data_args, args.data_dir, config.data.span)
    if restored.normalizer is not None:
        dataset = renormalize(dataset, restored.normalizer)
    split = dataset.split(args.split)
    feeder = make_feeder(model.graph, split, dataset.name)
    names = [model.graph.loss, *model.graph.metrics] if model.graph.loss else list(
        model.graph.metrics)
    metrics = evaluate(restored.session, feeder, split, names, args.batch)
    print(f"{args.split} ({len(split)} examples, epoch {restored.meta.get('epoch')}): "
          + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    warn_nonfinite(metrics, args.split, args.checkpoint)
    remember_cpu_kernels(args.device, args.kernels, warm_set)
    images = image_values(model, feeder)
    if images:
        peak = image_peak(dataset.normalizer) or (1.0 if float(np.max(split.x)) <= 1 else 255.0)
        for name, db in psnr_against_input(restored.session, feeder, split, images, peak,
                                           args.batch).items():
            print(f"PSNR {name} vs {feeder.x_name}: {db:.2f} dB")
    return 0


def warn_nonfinite(metrics: dict[str, float], split: str, checkpoint: str) -> None:
    """A NaN or infinite loss or metric is printed as it is, with a warning on stderr: the
    numbers mean nothing, most likely because the checkpoint's parameters are not finite."""
    bad = [f"{k} {v}" for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        print(f"warning: not finite on the {split} split: {', '.join(bad)}; the parameters "
              f"in {checkpoint} may hold NaN or infinity", file=sys.stderr)
