"""Every op of netlang on one table: arity, attributes, shape rule, VJP, kernels, facets.

    python3 tools/op_table.py            # the table (tests/golden/op_table.txt pins it)
    python3 tools/op_table.py --write    # regenerate the golden file after a change

Columns: the op and its arity (``*`` variadic); its attributes with defaults (``!`` =
required); its shape rule; its VJP as the ops it emits (read off the rule's source, helpers
followed one level: ``vjp: add, mul``), or ``-- why`` for an op without a gradient; the
kernels per backend (``xp``: the shared reference, ``cpu:`` the CPU backend's factories in
the order tried: ``loops`` Numba loops, ``onednn``, ``generated`` kernels, ``cpu`` NumPy paths;
``gpu:`` the GPU's overrides); and the facets passes read (``pure fold comm marker random``,
``expr``: the element expression the code generators compile).
"""
from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netlang.ops.registry import REQUIRED, all_ops
from netlang.runtime import cpu_kernels, cpu_loops, generated, gpu_kernels, onednn_kernels

GOLDEN = ROOT / "tests" / "golden" / "op_table.txt"
CALL = re.compile(r"\bb\.(\w+)\(|\bb\.op\(\"(\w+)\"|\b(\w+)\(b,")


def emitted_ops(fn, ops: dict, depth: int = 1) -> list[str]:
    """The op names a VJP rule emits through its builder ``b`` (helpers followed)."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return ["?"]
    if fn.__name__ == "<lambda>":
        source = source[source.find("vjp=lambda"):] if "vjp=lambda" in source else source
        source = source.split("\n)")[0]
    found: list[str] = []
    for cell in getattr(fn, "__closure__", None) or ():   # vjp_by_primitives(emit): emit's
        if inspect.isfunction(cell.cell_contents) and depth > 0:
            found += emitted_ops(cell.cell_contents, ops, depth - 1)
    for method, named, helper in CALL.findall(source):
        name = method or named
        if name in ops:
            found.append(name)
        elif helper and depth > 0:
            target = getattr(inspect.getmodule(fn), helper, None)
            if callable(target) and target is not fn:
                found += emitted_ops(target, ops, depth - 1)
    return list(dict.fromkeys(found))


def rule_name(fn) -> str:
    name = getattr(fn, "__qualname__", repr(fn))
    return name.split(".<locals>")[0].lstrip("_")


def attrs_text(attrs: dict) -> str:
    return ", ".join(f"{k}!" if v is REQUIRED else f"{k}={v!r}" for k, v in attrs.items())


def facets(op) -> str:
    flags = [name for name, on in (("pure", op.pure), ("fold", op.foldable),
                                   ("comm", op.commutative), ("marker", op.marker),
                                   ("random", op.random)) if on]
    if op.expr is not None:
        flags.append(f"expr `{op.expr}`")
    elif op.elementwise:
        flags.append("elementwise")
    return " ".join(flags)


def kernels_text(name: str, op) -> str:
    parts = ["xp" if op.kernel is not None else "-"]
    tables = (("loops", cpu_loops.loop_factories(library=False)),
              ("onednn", onednn_kernels.FACTORIES),
              ("generated", generated.generated_factories()),
              ("cpu", cpu_kernels.cpu_factories()))
    cpu = [label for label, table in tables if name in table]
    if cpu:
        parts.append("cpu:" + "+".join(dict.fromkeys(cpu)))
    if name in gpu_kernels.gpu_kernels():
        parts.append("gpu")
    return " ".join(parts)


def table() -> str:
    ops = all_ops()
    lines = []
    for name in sorted(ops):
        op = ops[name]
        arity = "*" if op.arity is None else str(op.arity)
        vjp = ("vjp: " + ", ".join(emitted_ops(op.vjp, ops)) if op.vjp is not None
               else f"-- {op.nondiff}")
        lines.append(f"{name}/{arity}({attrs_text(op.attrs)})  shape: {rule_name(op.shape)}")
        lines.append(f"    {vjp}")
        lines.append(f"    kernels: {kernels_text(name, op)}  {facets(op)}".rstrip())
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the golden file")
    args = parser.parse_args()
    text = table()
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
        print(f"wrote {GOLDEN.relative_to(ROOT)}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
