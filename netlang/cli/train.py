"""netlang train FILE: train a spec's network as its train section says.

    netlang train specs/mnist.net                     # the spec's recipe, run folder runs/mnist
    netlang train specs/mnist.net --epochs 2 --limit 5000 --out /tmp/quick
    netlang train specs/mnist.net --stop-after 5      # 5 of the 20 epochs, then stop
    netlang train specs/mnist.net --resume            # continue after the last checkpoint
    netlang train specs/mnist.net --force             # start over in a folder holding a run
    netlang train specs/mnist.net --init-from runs/other/last.ckpt   # fine-tune from a run
"""
from __future__ import annotations

import sys
from pathlib import Path

import netlang
from netlang.cli import add_device_arguments
from netlang.train.fit import check_options, train_model

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
    spell = (lambda option: "--" + option.replace("_", "-"))
    check_options(limit=args.limit, stop_after=args.stop_after, lr=args.lr,
                  resume=args.resume, force=args.force, init_from=args.init_from, spell=spell)
    model = netlang.compile(args.file)
    train_model(model, name=Path(args.file).stem, epochs=args.epochs, batch=args.batch,
                lr=args.lr, seed=args.seed, out=args.out, resume=args.resume,
                force=args.force, init_from=args.init_from, data_dir=args.data_dir,
                device=args.device, kernels=args.kernels, limit=args.limit,
                stop_after=args.stop_after, say=say, spell=spell)
    sys.stdout.flush()
    return 0
