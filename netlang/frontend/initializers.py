"""Parameter initializers as the spec writes them: ``glorot_uniform()``, ``normal(0.02)``.

Each becomes the tuple the runtime's ``initialize`` takes (``("normal", 0.02)``).  The names
and their arguments are listed here because the front end may not import the runtime.
"""
from __future__ import annotations

from netlang.errors import ArgumentError, Span, did_you_mean
from netlang.frontend.arguments import (
    REQUIRED,
    Given,
    Init,
    Param,
    Word,
    WrongType,
    bind,
    number,
    takes_word,
)

# name -> its arguments (all numbers), in the order the init tuple holds them.
INITIALIZERS: dict[str, tuple[Param, ...]] = {
    "zeros": (),
    "ones": (),
    "constant": (Param("value", number),),
    "normal": (Param("stddev", number, 1.0),),
    "glorot_normal": (),
    "glorot_uniform": (),
    "he_normal": (),
    "he_uniform": (),
}


def init_from_word(name: str) -> tuple | None:
    """``he_normal`` written without parentheses; None if it is not an initializer."""
    params = INITIALIZERS.get(name)
    if params is None or any(p.default is REQUIRED for p in params):
        return None
    return (name, *(p.default for p in params))


def init_from_call(name: str, args: list[Given], span: Span) -> Init:
    """``normal(stddev=0.02)`` -> ``Init(("normal", 0.02))``."""
    if name not in INITIALIZERS:
        raise ArgumentError(f"unknown initializer '{name}'", span,
                            hint=did_you_mean(name, INITIALIZERS))
    bound = bind(name, INITIALIZERS[name], args, span)
    return Init((name, *(bound[p.name] for p in INITIALIZERS[name])))


@takes_word
def init_spec(value) -> tuple:
    """An initial value as written: an initializer (``he_normal``, ``normal(0.02)``) or a
    number (a constant); raises ``WrongType`` for anything else."""
    if isinstance(value, Init):
        return value.spec
    if isinstance(value, Word) and init_from_word(value.name) is not None:
        return init_from_word(value.name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("constant", float(value))
    raise WrongType("an initializer such as glorot_uniform, he_normal, zeros or normal(0.1)")
