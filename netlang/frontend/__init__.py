"""The front end: parse .net text (Lark) and lower it to the IR (layers are macros).

    graph = load_spec(text, "specs/mnist.net")

``parser`` builds the syntax tree (``ast``; the only module that imports Lark), ``lower``
and ``calls`` turn it into a typed ``Graph`` (``layers`` holds the layer macros), and
``train_config`` validates the train section.  ``summary`` computes what ``netlang check``
and ``netlang summary`` print.
"""
from __future__ import annotations

from netlang.errors import SpecError
from netlang.frontend.lower import lower_spec
from netlang.frontend.parser import MAX_NESTING, parse
from netlang.ir.graph import Graph


def load_spec(text: str, path: str) -> Graph:
    """Parse and lower a spec to a ``Graph``; raises ``SpecError`` with file:line:col."""
    try:
        return lower_spec(parse(text, path))
    except RecursionError:  # the parser refuses deeper nesting; this is a deep caller's stack
        raise SpecError(f"{path}: an expression is nested too deeply to compile (at most "
                        f"{MAX_NESTING} levels of operators, calls or brackets, fewer when "
                        f"called from deep inside a program)",
                        hint="split it into several assignments, e.g. a = ...; b = a + ...") \
            from None
