"""netlang run FILE --fetch NAME --feed NAME=VALUE: compute values of a graph."""
from __future__ import annotations

import json

import numpy as np

import netlang
from netlang.cli import add_device_arguments
from netlang.cli.arrays import read_npy
from netlang.errors import UsageError

HELP = "run part of a network: fetch named values given feeds"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec")
    parser.add_argument("--fetch", action="append", required=True, metavar="NAME",
                        help="a value to compute (repeatable)")
    parser.add_argument("--feed", action="append", default=[], metavar="NAME=VALUE",
                        help="a value for a name: a number, a list like [1,2], or a .npy file")
    parser.add_argument("--train", action="store_true", help="run in training mode")
    parser.add_argument("--seed", type=int, default=0, help="seed for parameters and noise")
    add_device_arguments(parser)


def parse_feed(text: str) -> tuple[str, np.ndarray]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--feed '{text}' is not NAME=VALUE")
    if value.endswith(".npy"):
        return name, read_npy(value, f"--feed {name}")
    try:
        return name, np.asarray(json.loads(value))
    except json.JSONDecodeError:
        raise UsageError(f"--feed {name}: '{value}' is not a number, a list or a .npy file",
                         hint="e.g. --feed x=3.14 or --feed x=[1,2,3]") from None


def run(args) -> int:
    model = netlang.compile(args.file)
    session = model.session(device=args.device, seed=args.seed, kernels=args.kernels)
    feeds: dict[str, np.ndarray] = {}
    for text in args.feed:
        name, value = parse_feed(text)
        if name in feeds:
            raise UsageError(f"--feed {name} is given twice", hint="feed each name once")
        feeds[name] = value
    values = session.run(list(args.fetch), feeds, training=args.train)
    for name, value in zip(args.fetch, values):
        # floatmode="unique": as many digits as the dtype needs (5.2831855 for f32), no more.
        text = np.array2string(np.asarray(value), separator=", ", floatmode="unique")
        print(f"{name} = {text}")
    return 0
