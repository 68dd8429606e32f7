"""The names visible where an expression is lowered, and the errors about them.

Names are single-assignment.  An ``Env`` also knows the names its body defines *later*, so
using one too early says "used before it is defined (line 9)" instead of "unknown name".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netlang.errors import Span, SpecNameError, did_you_mean


@dataclass(frozen=True)
class Binding:
    value: Any
    span: Span
    what: str = "name"        # "name", "input", "parameter", "block parameter"


def defined_names(body) -> dict[str, Span]:
    """The names a body of statements defines, with where each is first defined."""
    out: dict[str, Span] = {}
    for stmt in body:
        name = getattr(stmt, "name", None)
        defines = getattr(stmt, "value", True) is not None  # not a bare 'output x'
        if name is not None and hasattr(stmt, "name_span") and name not in out and defines:
            out[name] = stmt.name_span
    return out


class Env:
    """name -> ``Binding`` for one network or one block use."""

    def __init__(self, body=(), outer: Env | None = None, owner: str | None = None):
        self.names: dict[str, Binding] = {}
        self.later = defined_names(body)
        self.outer = outer          # the network's names, for hints inside a block
        self.owner = owner          # "block 'residual'" when this is a block's scope

    def define(self, name: str, value, span: Span, what: str = "name") -> None:
        self.ensure_new(name, span)
        self.names[name] = Binding(value, span, what)

    def ensure_new(self, name: str, span: Span) -> None:
        """Raise the "already defined" error, pointing at ``span``, if ``name`` is taken."""
        first = self.names.get(name)
        if first is not None:
            where = f"line {first.span.line}"
            if first.what != "name":
                where += f", as {'an' if first.what[0] in 'aeiou' else 'a'} {first.what}"
            raise SpecNameError(f"'{name}' is already defined ({where})", span,
                          hint="names are single-assignment: give the new value another name")

    def lookup(self, name: str):
        binding = self.names.get(name)
        return None if binding is None else binding.value

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def unknown(self, name: str, span: Span, callables=()) -> SpecNameError:
        """The error for a name that is not defined here (yet)."""
        if name in self.later:
            return SpecNameError(f"'{name}' is used before it is defined "
                           f"(line {self.later[name].line})", span,
                           hint="move the definition above its first use")
        hint = did_you_mean(name, self.names)
        if hint is None and self.outer is not None and name in self.outer:
            hint = (f"a block sees only its parameters and its own names: pass '{name}' to "
                    f"{self.owner} as an argument")
        if hint is None and name in callables:
            hint = f"'{name}' is an op or layer: call it, as in {name}(x), or pipe into it"
        return SpecNameError(f"unknown name '{name}'", span, hint=hint)
