"""netlang ir FILE [--after PASS] [--train]: the IR text, one node a line."""
from __future__ import annotations

import netlang

HELP = "print the typed IR, one node a line, with the spec location of each node"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec")
    parser.add_argument("--after", metavar="PASS", default=None,
                        help="show the graph after this pass ('lowered' for the front end's "
                             "output)")
    parser.add_argument("--train", action="store_true",
                        help="the training graph (gradients and updates included)")
    parser.add_argument("--no-spans", action="store_true", help="omit the source locations")


def run(args) -> int:
    model = netlang.compile(args.file)
    print(model.ir(after=args.after, training=args.train, with_span=not args.no_spans), end="")
    return 0
