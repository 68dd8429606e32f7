"""netlang gradcheck FILE: parameter gradients vs central finite differences in float64."""
from __future__ import annotations

import netlang
from netlang.gradcheck import gradcheck

HELP = "check every parameter's gradient against finite differences (float64)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .net spec with a loss")
    parser.add_argument("--batch", type=int, default=2, help="random batch size (default 2)")
    parser.add_argument("--per-param", type=int, default=6,
                        help="entries perturbed per parameter (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest acceptable relative error (default 1e-4)")


def run(args) -> int:
    model = netlang.compile(args.file)
    results = gradcheck(model, batch=args.batch, per_param=args.per_param, seed=args.seed)
    width = max((len(r.name) for r in results), default=9)
    print(f"{'parameter':<{width}}  {'shape':<18} checked  worst rel. error")
    failed = 0
    for r in results:
        flag = "" if r.worst_rel_error <= args.tolerance else "  <-- too large"
        failed += bool(flag)
        shape = "[" + ",".join(map(str, r.shape)) + "]"
        print(f"{r.name:<{width}}  {shape:<18} {r.checked:>7}  {r.worst_rel_error:.2e}{flag}")
    print(f"{len(results) - failed} of {len(results)} parameters within {args.tolerance:g}")
    return 1 if failed else 0
