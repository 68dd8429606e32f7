"""Values the lowering passes around, and how call arguments bind to a signature.

While lowering, an expression evaluates to a ``Tensor`` (an IR value), a Python literal
(int, float, bool, str, tuple), a ``Word`` (a bare name that is not a value: ``same``,
``relu``, ``f32``) or an ``Init`` (``glorot_uniform()``, a parameter initializer).
A layer declares its signature as a tuple of ``Param``; ``bind`` matches the arguments of a
call against it and converts each one, with errors that name the argument and point at it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netlang.errors import ArgumentError, Span, did_you_mean
from netlang.ops.registry import REQUIRED


@dataclass(frozen=True)
class Tensor:
    id: int


@dataclass(frozen=True)
class Word:
    """A bare identifier used as an enum-like value (``padding=same``, ``dtype=f32``)."""

    name: str


@dataclass(frozen=True)
class Init:
    """A parameter initializer: the tuple the runtime's ``initialize`` takes."""

    spec: tuple

    def __str__(self) -> str:
        kind, *args = self.spec
        return f"{kind}({', '.join(repr(a) for a in args)})"


@dataclass(frozen=True)
class Given:
    """One evaluated call argument: its value, where it was written, its keyword if any."""

    value: Any
    span: Span
    name: str | None = None
    word: Word | None = None   # the bare name written (``same``), even if a value has it


def takes_word(convert: Callable) -> Callable:
    """Mark a converter of enum-like words (``padding=same``, ``activation=relu``): a bare
    name given to it is that word, even when the spec also has a value of that name."""
    convert.takes_word = True
    return convert


class WrongType(Exception):
    """Raised by a converter; ``expected`` says in words what it wanted."""

    def __init__(self, expected: str, hint: str | None = None):
        super().__init__(expected)
        self.expected = expected
        self.hint = hint


@dataclass(frozen=True)
class Param:
    """One parameter of a layer's signature: a name, a converter and a default."""

    name: str
    convert: Callable[[Any], Any]
    default: Any = REQUIRED
    keyword_only: bool = False       # name=, share=: never filled by position


def describe(value) -> str:
    """A value in words, for error messages."""
    if isinstance(value, Tensor):
        return "a tensor"
    if isinstance(value, Word):
        return f"the name '{value.name}'"
    if isinstance(value, Init):
        return f"the initializer {value}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value:g}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, tuple):
        return f"the tuple ({', '.join(_plain(v) for v in value)})"
    return "None" if value is None else repr(value)


def _plain(value) -> str:
    if isinstance(value, Word):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    return "<tensor>" if isinstance(value, Tensor) else repr(value)


def signature_text(fname: str, params: tuple[Param, ...]) -> str:
    """``dense(x, units, activation=None, ...)`` for hints."""
    parts = []
    for p in params:
        if p.default is REQUIRED:
            parts.append(p.name)
        else:
            parts.append(f"{p.name}={_default_text(p.default)}")
    return f"{fname}({', '.join(parts)})"


def _default_text(value) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], str):
        return value[0]  # an initializer spec
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bind(fname: str, params: tuple[Param, ...], args: list[Given], call_span: Span,
         unknown_name: Callable[[str, Span], Exception] | None = None) -> dict[str, Any]:
    """Match ``args`` to ``params`` and convert them; the result maps every param name.

    A bare name given where a tensor belongs is most likely a misspelt value name, so it
    raises ``unknown_name(name, span)`` (the lowering's "unknown name, did you mean").
    """
    given = _assign(fname, params, args, call_span)
    out = {}
    for p in params:
        if p.name not in given:
            if p.default is REQUIRED:
                raise ArgumentError(f"{fname} needs the argument '{p.name}'", call_span,
                                    hint=signature_text(fname, params))
            out[p.name] = p.default
            continue
        arg = given[p.name]
        if arg.word is not None and getattr(p.convert, "takes_word", False):
            arg = Given(arg.word, arg.span, arg.name, arg.word)   # enums: their own names
        if (unknown_name is not None and isinstance(arg.value, Word)
                and p.convert in (tensor, optional_tensor)):
            raise unknown_name(arg.value.name, arg.span)
        try:
            out[p.name] = p.convert(arg.value)
        except WrongType as err:
            raise ArgumentError(
                f"{fname}: '{p.name}' must be {err.expected}, got {describe(arg.value)}",
                arg.span, hint=err.hint) from None
    return out


def _assign(fname: str, params: tuple[Param, ...], args: list[Given],
            call_span: Span) -> dict[str, Given]:
    names = [p.name for p in params]
    given: dict[str, Given] = {}
    positional = [a for a in args if a.name is None]
    slots = [p for p in params if not p.keyword_only]
    if len(positional) > len(slots):
        raise ArgumentError(f"too many positional arguments for {fname}",
                            positional[len(slots)].span, hint=signature_text(fname, params))
    for p, arg in zip(slots, positional):
        given[p.name] = arg
    for arg in args:
        if arg.name is None:
            continue
        if arg.name not in names:
            raise ArgumentError(f"{fname} has no argument '{arg.name}'", arg.span,
                                hint=did_you_mean(arg.name, names)
                                or signature_text(fname, params))
        if arg.name in given:
            raise ArgumentError(f"{fname} got the argument '{arg.name}' twice", arg.span)
        given[arg.name] = arg
    return given


# -- converters ----------------------------------------------------------------------------

def positive_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WrongType("a positive integer")
    return value


def pair(value) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(3, 5)`` stays."""
    if isinstance(value, tuple) and len(value) == 2:
        return positive_int(value[0]), positive_int(value[1])
    try:
        v = positive_int(value)
    except WrongType:
        raise WrongType("a positive integer or a pair of them") from None
    return v, v


def optional_pair(value):
    return None if value is None else pair(value)


def number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WrongType("a number")
    return float(value)


def rate(value) -> float:
    v = number(value)
    if not 0.0 <= v < 1.0:
        raise WrongType("a number in [0, 1)")
    return v


def boolean(value) -> bool:
    if not isinstance(value, bool):
        raise WrongType("true or false")
    return value


def integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType("an integer")
    return value


def tensor(value) -> Tensor:
    if not isinstance(value, Tensor):
        raise WrongType("a tensor")
    return value


def optional_tensor(value):
    return None if value is None else tensor(value)


@takes_word
def word_or_string(value) -> str:
    if isinstance(value, Word):
        return value.name
    if isinstance(value, str):
        return value
    raise WrongType("a name")


@takes_word
def optional_name(value):
    return None if value is None else word_or_string(value)


def choice(*options: str) -> Callable[[Any], str]:
    """A converter accepting one of ``options`` given as a bare name or a string."""
    @takes_word
    def convert(value) -> str:
        try:
            text = word_or_string(value).lower()
        except WrongType:
            text = None
        if text not in options:
            words = " or ".join(options) if len(options) <= 2 else (
                ", ".join(options[:-1]) + " or " + options[-1])
            raise WrongType(words, did_you_mean(text, options) if text else None)
        return text
    return convert
