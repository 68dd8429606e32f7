"""netlang run FILE --fetch NAME --feed NAME=VALUE [--times K]: compute values of a graph."""
from __future__ import annotations

import json

import numpy as np

import netlang
from netlang.cli import add_device_arguments
from netlang.cli.arrays import read_npy
from netlang.errors import NonFiniteError, UsageError
from netlang.ir.types import is_float_dtype
from netlang.train.nonfinite import (
    describe_node,
    describe_values,
    first_nonfinite,
    nonfinite_span,
)

HELP = "run part of a network: fetch named values given feeds"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec")
    parser.add_argument("--fetch", action="append", required=True, metavar="NAME",
                        help="a value to compute (repeatable)")
    parser.add_argument("--feed", action="append", default=[], metavar="NAME=VALUE",
                        help="a value for a name: a number, a list like [1,2], or a .npy file")
    parser.add_argument("--train", action="store_true", help="run in training mode")
    parser.add_argument("--seed", type=int, default=0, help="seed for parameters and noise")
    parser.add_argument("--times", type=int, default=1, metavar="K",
                        help="run K times in one session, printing the fetches after each "
                             "run (variables that assign() updates keep their new values)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="print fetched values that hold a NaN or an infinity instead of "
                             "stopping with an error")
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
    if args.times < 1:
        raise UsageError(f"--times must be at least 1, got {args.times}")
    for _ in range(args.times):
        before = (dict(session.state.arrays), session.rng.bit_generator.state)
        with np.errstate(all="ignore"):    # a NaN is reported below, with the op it came from
            values = session.run(list(args.fetch), feeds, training=args.train)
        if not args.allow_nonfinite:
            check_finite(session, args, feeds, values, *before)
        for name, value in zip(args.fetch, values):
            # floatmode="unique": as many digits as the dtype needs (5.2831855 for f32).
            text = np.array2string(np.asarray(value), separator=", ", floatmode="unique")
            print(f"{name} = {text}", flush=True)
    return 0


def check_finite(session, args, feeds: dict, values: list, arrays: dict, rng_state) -> None:
    """Refuse fetched float values that hold a NaN or an infinity, naming them and the first
    op that went non-finite (found by running again with every value checked)."""
    bad = [(name, describe_values(value)) for name, value in zip(args.fetch, values)
           if _is_nonfinite(value)]
    if not bad:
        return
    if len(bad) == 1:
        head = f"'{bad[0][0]}' is not finite ({bad[0][1]})"
    else:
        head = ", ".join(f"'{name}' ({text})" for name, text in bad) + " are not finite"
    found = first_nonfinite(session, list(args.fetch), feeds, args.train,
                            False, arrays, rng_state)
    if found is None:
        raise NonFiniteError(head, hint=RUN_HINT)
    node, value, inner = found
    raise NonFiniteError(f"{head}; the first non-finite value: {describe_node(node, inner)}: "
                         f"{describe_values(value)}", nonfinite_span(node, inner),
                         hint=ALLOW_HINT if node.is_source() else RUN_HINT)


def _is_nonfinite(value) -> bool:
    value = np.asarray(value)
    return is_float_dtype(value.dtype) and not bool(np.isfinite(value).all())


ALLOW_HINT = "pass --allow-nonfinite to print the values anyway"
RUN_HINT = "keep log/div/sqrt away from zero (for example log(x + 1e-7)), or " + ALLOW_HINT
