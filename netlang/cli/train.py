"""netlang train FILE: train a spec's network as its train section says.

    netlang train specs/mnist.net                     # the spec's recipe, run folder runs/mnist
    netlang train specs/mnist.net --epochs 2 --limit 5000 --out /tmp/quick
    netlang train specs/mnist.net --stop-after 5      # 5 of the 20 epochs, then stop
    netlang train specs/mnist.net --resume            # continue after the last checkpoint
    netlang train specs/mnist.net --force             # start over in a folder holding a run
    netlang train specs/mnist.net --init-from runs/other/last.ckpt   # fine-tune from a run
    netlang train specs/mnist.net --ranks 2            # 2 processes on this machine (MPI)
    mpiexec -n 8 -f hosts netlang train specs/mnist.net   # 8 ranks on a hostfile's machines

With several ranks (``pip install 'netlang[mpi]'``) the spec's batch is the global batch:
each rank trains on its slice and the gradients are summed over the ranks each step; rank 0
alone prints, logs and writes checkpoints.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import netlang
from netlang.cli import add_device_arguments
from netlang.errors import UsageError
from netlang.runtime.threads import launched_ranks
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
    parser.add_argument("--ranks", type=int, metavar="R",
                        help="train with R processes on this machine (starts mpiexec; needs "
                             "pip install 'netlang[mpi]')")


def say(text: str) -> None:
    print(text, flush=True)


def mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel's), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        raise UsageError("--ranks needs mpiexec, which was not found",
                         hint="install the MPI extra: pip install 'netlang[mpi]' (mpi4py "
                              "and MPICH), or put your MPI's mpiexec on PATH")
    return found


def without_ranks(argv: list[str]) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--ranks":
            skip = True
        elif not token.startswith("--ranks="):
            out.append(token)
    return out


def mpiexec_command(ranks: int) -> list[str]:
    """``mpiexec -n R``, to which the program and its arguments are added.  MPICH's mpiexec
    stops every rank the moment one dies and names its PID (the header line of the run
    lists each rank's PID); a rank that hangs is named by the others (train/mpi.py)."""
    return [mpiexec(), "-n", str(ranks)]


def launch(args) -> int:
    """``--ranks R``: this command again under ``mpiexec -n R``, its exit status ours."""
    command = [*mpiexec_command(args.ranks), sys.executable, "-m", "netlang",
               *without_ranks(args._argv)]
    return subprocess.call(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def run(args) -> int:
    if args.ranks is not None:
        if args.ranks < 1:
            raise UsageError(f"--ranks must be at least 1, got {args.ranks}")
        if args.ranks > 1 and launched_ranks() == 1:
            return launch(args)
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
