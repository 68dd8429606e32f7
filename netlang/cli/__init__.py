"""The ``netlang`` command.  Each subcommand lives in its own module of this package.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``,
which returns the exit status.  Errors a user can cause are printed, never a traceback
(``--debug`` shows one).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from netlang.errors import NetlangError
from netlang.runtime.backend import KERNEL_CHOICES, keep_freed_memory

# Subcommand name -> module (in netlang.cli).  Order is the order of --help.
COMMANDS = {
    "check": "check",
    "summary": "summary",
    "ir": "ir",
    "run": "run",
    "gradcheck": "gradcheck",
    "explain": "explain",
    "train": "train",
    "eval": "evaluate",
    "predict": "predict",
    "render": "render",
    "export": "export",
    "import": "import_model",
    "bench": "bench",
}


COMPUTING = {"run", "gradcheck", "train", "eval", "predict", "bench",   # commands that run
             "explain", "export", "import"}                            # (or bind) kernels


def add_device_arguments(parser) -> None:
    """``--device``, ``--kernels`` and ``--no-graph``, as every command that runs a graph
    takes them."""
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--no-graph", action="store_true",
                        help="on the GPU, launch every kernel of a step instead of replaying "
                             "the step as CUDA graphs (for debugging)")
    parser.add_argument("--kernels", default="default", choices=list(KERNEL_CHOICES),
                        help="CPU kernels: default (oneDNN, then netlang's own), builtin "
                             "(netlang's own, no library), numpy (the reference kernels alone, "
                             "for debugging)")


def _load_commands():
    for name, module in COMMANDS.items():
        try:
            yield name, importlib.import_module(f"netlang.cli.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"netlang.cli.{module}":
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netlang", description="Compile, inspect, train and run .net network specs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in _load_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def show_kernel_compiles() -> None:
    """A progress line on stderr while generated kernels compile the first time (a terminal
    sees one line rewritten; a log, one line per kernel)."""
    from netlang.runtime import cpu_kernels

    end = "\r" if sys.stderr.isatty() else "\n"
    cpu_kernels.on_compile = lambda line: print(line, end=end, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)     # as given (train --ranks)
    # The command line owns its process, so it (and not the library) makes the process-wide
    # settings a step runs best with: glibc keeps freed memory for reuse, and OpenBLAS's and
    # OpenMP's (oneDNN's) thread pools are sized together before oneDNN loads.
    keep_freed_memory()
    if getattr(args, "no_graph", False):
        os.environ["NETLANG_GRAPHS"] = "0"      # read by the executor (runtime/capture.py)
    if args.command in COMPUTING:
        from netlang.runtime.threads import configure_cpu_threads, launched_rank

        configure_cpu_threads()
        if launched_rank() == 0:        # one progress line, not one per MPI rank
            show_kernel_compiles()
    try:
        return int(args._run(args) or 0)
    except NetlangError as err:
        if args.debug:
            raise
        print(str(err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
