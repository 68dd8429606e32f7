"""``netlang render FILE -o out.svg``: draw a network's graph with Graphviz.

The format comes from the extension (.svg, .png, .pdf, or .dot for the Graphviz source).
``--train`` adds the gradient nodes, ``--optimized`` shows the graph after CSE, folding and
dead-code elimination (with what they merged and removed), ``--detail op`` draws every IR
node instead of one box per layer.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "draw a network's graph to .svg, .png, .pdf or .dot with Graphviz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .net spec")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="the picture to write; its extension picks the format "
                             "(.svg .png .pdf .dot; default: the spec's name with .svg)")
    parser.add_argument("--train", action="store_true",
                        help="the training graph: forward plus every gradient node")
    parser.add_argument("--optimized", action="store_true",
                        help="after optimization (for inference, or for training with "
                             "--train), marking what was merged, folded and removed")
    parser.add_argument("--detail", choices=("layer", "op"), default="layer",
                        help="one box per layer (default) or one per IR node")


def run(args: argparse.Namespace) -> int:
    import netlang
    from netlang.viz import render
    from netlang.viz.output import format_of

    out = Path(args.output) if args.output else Path(Path(args.file).stem + ".svg")
    format_of(out)  # a bad extension fails before the spec is compiled
    model = netlang.compile(args.file)
    path = render(model, out, train=args.train, optimized=args.optimized, detail=args.detail)
    print(f"wrote {path}")
    return 0
