"""netlang train FILE: train a spec's network as its train section says.

    netlang train specs/mnist.net                     # the spec's recipe, run folder runs/mnist
    netlang train specs/mnist.net --epochs 2 --limit 5000 --out /tmp/quick
    netlang train specs/mnist.net --stop-after 5      # 5 of the 20 epochs, then stop
    netlang train specs/mnist.net --resume            # continue after the last checkpoint
    netlang train specs/mnist.net --force             # start over in a folder holding a run
    netlang train specs/mnist.net --init-from runs/other/last.ckpt   # fine-tune from a run
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import netlang
from netlang.cli import add_device_arguments
from netlang.errors import UsageError
from netlang.train.config import train_config
from netlang.train.data import limit, load_dataset
from netlang.train.fit import fit
from netlang.train.loop import Trainer
from netlang.train.runs import RunFolder

HELP = "train a network from its spec's train section (log, checkpoints, plot)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec with a train section")
    parser.add_argument("--epochs", type=int, help="total epochs (default: the spec's)")
    parser.add_argument("--batch", type=int, help="batch size (default: the spec's)")
    parser.add_argument("--lr", type=float, help="base learning rate (default: the spec's)")
    parser.add_argument("--seed", type=int, help="seed for parameters, shuffling and dropout")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: runs/<spec-name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run folder's last checkpoint")
    parser.add_argument("--init-from", metavar="CKPT",
                        help="start from the variables of a checkpoint whose names match "
                             "(fine-tuning); the others keep their initial values")
    parser.add_argument("--force", action="store_true",
                        help="start a fresh run even if the run folder holds one (it is "
                             "replaced)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the data set's files (or set NETLANG_DATA)")
    add_device_arguments(parser)
    parser.add_argument("--limit", type=int, metavar="N",
                        help="train on the first N training examples only (quick runs)")
    parser.add_argument("--stop-after", type=int, metavar="K",
                        help="stop after K epochs of this call, keeping the run's schedule "
                             "(continue later with --resume)")


def say(text: str) -> None:
    print(text, flush=True)


def run(args) -> int:
    for flag, value in (("--limit", args.limit), ("--stop-after", args.stop_after)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    model = netlang.compile(args.file)
    config = train_config(model.graph.spec.train, model.graph.name).with_overrides(
        epochs=args.epochs, batch=args.batch, seed=args.seed)
    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other",
                         hint="--resume continues the run; --force replaces it")
    if args.resume and args.init_from:
        raise UsageError("--resume and --init-from contradict each other",
                         hint="--resume continues the run from its own checkpoint; "
                              "--init-from starts a new run from another's variables")
    run_folder = RunFolder(args.out or Path("runs") / Path(args.file).stem)
    run_folder.check()
    with run_folder.locked():
        if not (args.resume or args.force):
            run_folder.refuse_overwrite()
        return train_in(args, model, config, run_folder)


def train_in(args, model, config, run_folder: RunFolder) -> int:
    """Load the data and train into ``run_folder`` (whose lock the caller holds)."""
    dataset = load_dataset(config.data.name, config.data.args, args.data_dir, config.data.span)
    dataset = limit(dataset, args.limit)
    trainer = Trainer(model, config, dataset, device=args.device, lr=args.lr,
                      kernels=args.kernels)
    if args.init_from:
        for note in trainer.init_from(args.init_from):
            say(note)
    val = len(dataset.validation) if dataset.validation is not None else 0
    say(f"training {model.graph.name} on {dataset.name}: {len(dataset.train)} examples "
        f"({val} for validation), {config.epochs} epochs of batch {config.batch}, "
        f"{trainer.optimizer.describe()}, schedule {trainer.schedule.describe()}, "
        f"seed {config.seed}, {trainer.session.backend.describe()}")
    result = fit(trainer, run_folder, resume=args.resume, out=say, stop_after=args.stop_after)
    if result.plot:
        say(f"run folder {run_folder.path}: log.jsonl, last.ckpt, curves.png")
    sys.stdout.flush()
    return 0
