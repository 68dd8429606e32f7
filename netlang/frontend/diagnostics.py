"""Reporting every independent error of a spec, not just the first.

The lowering goes on after a statement fails: the names that statement would have defined
are bound to ``BROKEN``, and a later statement that uses one stops quietly (``Cascade``)
instead of reporting an error that is only a consequence of the first.  ``SpecErrors``
carries what was found, in source order, up to ``MAX_ERRORS``.
"""
from __future__ import annotations

from netlang.errors import SpecError

MAX_ERRORS = 20


class _Broken:
    """The value of a name whose definition failed."""

    def __repr__(self) -> str:
        return "BROKEN"


BROKEN = _Broken()


class Cascade(Exception):
    """A statement used a name whose definition already failed: nothing new to report."""


class TooManyErrors(Exception):
    """Raised once ``MAX_ERRORS`` errors are collected; the lowering stops there."""


class SpecErrors(SpecError):
    """Several independent errors; prints each one, then how many there were.

    ``message``, ``span``, ``hint`` and ``kind`` are the first error's, so code that looks
    at one error still sees a located one.
    """

    def __init__(self, errors: list[SpecError], truncated: bool = False):
        first = errors[0]
        super().__init__(first.message, first.span, first.hint)
        self.kind = first.kind
        self.errors = list(errors)
        self.truncated = truncated

    def __str__(self) -> str:
        tail = (f"stopped after the first {len(self.errors)} errors" if self.truncated
                else f"{len(self.errors)} errors")
        return "\n\n".join([*(str(e) for e in self.errors), tail])


class ErrorList:
    """Collects errors; ``raise_if_any`` raises the one error, or ``SpecErrors``."""

    def __init__(self, limit: int = MAX_ERRORS):
        self.errors: list[SpecError] = []
        self.limit = limit
        self.truncated = False

    def add(self, err: SpecError) -> None:
        self.errors.append(err)
        if len(self.errors) >= self.limit:
            self.truncated = True
            raise TooManyErrors

    def raise_if_any(self) -> None:
        if len(self.errors) == 1 and not self.truncated:
            raise self.errors[0]
        if self.errors:
            raise SpecErrors(self.errors, self.truncated)
