"""The ``train NAME { KEY VALUE ... }`` section: parsed generically, validated here.

The result is the plain dict the training loop reads from ``graph.spec.train`` (see
``netlang.train.config``); only the settings the spec gives appear, the trainer fills in
its defaults::

    {"data": {"name": "mnist", "args": {"validation": 5000}, "span": Span},
     "optimizer": {"name": "adam", "args": {"lr": 0.0001}, "span": Span},
     "batch": 64, "epochs": 20, "seed": 123,
     "spans": {"data": Span, "data.validation": Span, "optimizer.lr": Span, ...}}

Settings written as ``NAME(args)`` take the arguments listed in ``CHOICES`` (the names the
trainer's data sets, optimizers and schedules take); a first positional argument is
``lr`` for an optimizer and ``path`` for ``npz``.  ``spans`` keeps where each setting and
argument was written, so later errors (a missing data file, a diverging lr) point at it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from netlang.errors import ArgumentError, Span, SpecError, SpecNameError, did_you_mean
from netlang.frontend import ast
from netlang.frontend.arguments import (
    Given,
    Param,
    WrongType,
    bind,
    boolean,
    choice,
    describe,
    number,
    positive_int,
    word_or_string,
)
from netlang.frontend.constants import constant_value


def non_negative_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WrongType("an integer >= 0")
    return value


def non_negative(value) -> float:
    v = number(value)
    if v < 0:
        raise WrongType("a number >= 0")
    return v


def positive(value) -> float:
    v = number(value)
    if v <= 0:
        raise WrongType("a number > 0")
    return v


def validation_size(value):
    """A count of held-out examples (5000) or a fraction of the training set (0.1)."""
    if isinstance(value, float) and 0 < value < 1:
        return value
    try:
        return non_negative_int(value)
    except WrongType:
        raise WrongType("a count >= 0 or a fraction between 0 and 1") from None


# The defaults shown here are the trainer's (netlang.train): they appear in hints only; the
# config keeps just what the spec gives.
def _images(normalize: str) -> tuple[Param, ...]:
    return (Param("validation", validation_size, 0),
            Param("normalize", choice("scale", "standardize", "none"), normalize))


# KEY -> {choice -> its arguments}, for settings written as NAME(args).
CHOICES: dict[str, dict[str, tuple[Param, ...]]] = {
    "data": {
        "mnist": _images("scale"),
        "fashion_mnist": _images("scale"),
        "spiral": (Param("points", positive_int, 100), Param("classes", positive_int, 4),
                   Param("noise", non_negative, 0.2), Param("seed", non_negative_int, 0),
                   *_images("none")),
        "npz": (Param("path", word_or_string), *_images("none")),
    },
    "optimizer": {
        "sgd": (Param("lr", positive, 0.01),),
        "momentum": (Param("lr", positive, 0.01), Param("momentum", non_negative, 0.9),
                     Param("nesterov", boolean, False)),
        "rmsprop": (Param("lr", positive, 1e-3), Param("decay", non_negative, 0.9),
                    Param("momentum", non_negative, 0.0), Param("epsilon", positive, 1e-10)),
        "adam": (Param("lr", positive, 1e-3), Param("beta1", non_negative, 0.9),
                 Param("beta2", non_negative, 0.999), Param("epsilon", positive, 1e-8)),
        "adagrad": (Param("lr", positive, 1e-2),
                    Param("initial_accumulator", non_negative, 0.1)),
    },
    "schedule": {
        "constant": (),
        "step": (Param("every", positive, 1.0), Param("factor", positive, 0.1)),
        "exponential": (Param("every", positive, 1.0), Param("factor", positive, 0.96)),
        "cosine": (Param("min", non_negative, 0.0), Param("warmup", non_negative, 0.0)),
    },
    # mixed: convolutions and matmuls in a half dtype, f32 master weights (passes/autocast)
    "precision": {
        "f32": (),
        "mixed": (Param("dtype", choice("bf16", "f16"), "bf16"),),
    },
    # gradients sent between MPI ranks as float16, summed in float32 (train/mpi.py)
    "compress": {"none": (), "f16": ()},
}
# Data augmentations (``augment [shift(2), flip_lr]``) and their arguments (train/augment.py).
AUGMENTATIONS: dict[str, tuple[Param, ...]] = {
    "shift": (Param("pixels", positive_int, 2),),
    "flip_lr": (),
}
# KEY -> converter, for settings written as a plain value.
PLAIN: dict[str, Callable] = {
    "batch": positive_int, "epochs": positive_int, "seed": non_negative_int,
    "validation": validation_size, "weight_decay": non_negative, "keep": positive_int,
    "sync_batchnorm": boolean,    # batchnorm's moments over every MPI rank's examples
}
EXAMPLES = {"data": "data mnist(validation=5000)", "optimizer": "optimizer adam(lr=1e-3)",
            "schedule": "schedule cosine()", "precision": "precision mixed(dtype=bf16)",
            "compress": "compress f16"}
KEYS = [*CHOICES, *PLAIN, "augment"]


def validate_train(section: ast.Train) -> dict:
    """The checked, defaulted train settings of one section, as a plain dict."""
    config: dict[str, Any] = {"spans": {}}
    seen: dict[str, ast.TrainEntry] = {}
    for entry in section.entries:
        _check_key(entry, seen)
        config["spans"][entry.key] = entry.span
        if entry.key == "data":
            entry = _augment_from_data(entry, config, seen)
        if entry.key in CHOICES:
            config[entry.key] = _choice(entry, config["spans"])
        elif entry.key == "augment":
            config[entry.key] = _augmentations(entry)
        else:
            config[entry.key] = _plain(entry)
    _check_validation_once(config, seen)
    return config


def _check_key(entry: ast.TrainEntry, seen: dict) -> None:
    if entry.key not in KEYS:
        raise SpecNameError(f"unknown train setting '{entry.key}'", entry.key_span,
                      hint=did_you_mean(entry.key, KEYS) or f"settings: {', '.join(KEYS)}")
    if entry.key in seen:
        raise SpecError(f"train setting '{entry.key}' is given twice (line "
                        f"{seen[entry.key].span.line})", entry.key_span)
    seen[entry.key] = entry


def _plain(entry: ast.TrainEntry):
    convert = PLAIN[entry.key]
    value = constant_value(entry.value)
    try:
        return convert(value)
    except WrongType as err:
        raise ArgumentError(f"{entry.key} must be {err.expected}, got {describe(value)}",
                            entry.value.span) from None


def _choice(entry: ast.TrainEntry, spans: dict) -> dict:
    """``optimizer adam(lr=1e-4)`` -> ``{"name": "adam", "lr": 0.0001, ...}``."""
    options = CHOICES[entry.key]
    name, args, name_span = _call_parts(entry.value, (
        f"{entry.key} must name one of {', '.join(options)}",
        f"for example: {EXAMPLES[entry.key]}"))
    if name not in options:
        noun = "data set" if entry.key == "data" else entry.key
        raise SpecNameError(f"unknown {noun} '{name}'", name_span,
                      hint=did_you_mean(name, options) or f"use one of {', '.join(options)}")
    bound = bind(name, options[name], args, entry.value.span)
    positional = iter(options[name])
    given = {}
    for arg in args:
        key = arg.name or next(positional).name
        spans[f"{entry.key}.{key}"] = arg.span
        given[key] = bound[key]
    return {"name": name, "args": given, "span": entry.value.span}


def _call_parts(value, refusal: tuple[str, str]) -> tuple[str, list[Given], Span]:
    """``NAME`` or ``NAME(args)`` as (name, arguments, the name's span); anything else is
    ``refusal`` (the message's start, the hint)."""
    if isinstance(value, ast.Name):
        return value.id, [], value.span
    if isinstance(value, ast.Call) and not value.piped:
        args = [Given(constant_value(a.value), a.span, a.name) for a in value.args]
        return value.func, args, value.func_span
    message, hint = refusal
    raise ArgumentError(f"{message}, got {describe(constant_value(value))}", value.span,
                        hint=hint)


def _augmentations(entry: ast.TrainEntry) -> list[dict]:
    """``augment [shift(2), flip_lr]`` (or one of them alone) -> ``[{"name": "shift", "args":
    {...}}, ...]``, each checked against ``AUGMENTATIONS``."""
    items = entry.value.items if isinstance(entry.value, ast.Sequence) else (entry.value,)
    out = []
    for item in items:
        name, args, name_span = _call_parts(item, (
            "augment takes augmentations such as shift(2) or flip_lr",
            f"augmentations: {', '.join(AUGMENTATIONS)}"))
        if name not in AUGMENTATIONS:
            known = f"augmentations: {', '.join(AUGMENTATIONS)}"
            near = did_you_mean(name, AUGMENTATIONS)
            raise SpecNameError(f"unknown augmentation '{name}'", name_span,
                                hint=f"{near} ({known})" if near else known)
        bound = bind(name, AUGMENTATIONS[name], args, item.span)
        out.append({"name": name, "args": dict(bound), "span": item.span})
    return out


def _augment_from_data(entry: ast.TrainEntry, config: dict, seen: dict) -> ast.TrainEntry:
    """``data mnist(validation=5000, augment=[shift(2)])`` means ``augment [shift(2)]`` as
    well (augmentations belong to the data, but every data set takes them): the entry
    without that argument, with ``config["augment"]`` set from it."""
    value = entry.value
    if not isinstance(value, ast.Call):
        return entry
    given = [a for a in value.args if a.name == "augment"]
    if not given:
        return entry
    if "augment" in seen:
        raise SpecError("augment is given twice: in data(...) and as a setting",
                        seen["augment"].key_span, hint="keep one of them")
    seen["augment"] = entry
    config["augment"] = _augmentations(replace(entry, value=given[0].value))
    config["spans"]["augment"] = given[0].span
    rest = tuple(a for a in value.args if a.name != "augment")
    return replace(entry, value=replace(value, args=rest))


def _check_validation_once(config: dict, seen: dict) -> None:
    """``data mnist(validation=5000)`` and ``validation 5000`` mean the same: one of them."""
    if "validation" in seen and "validation" in config.get("data", {}).get("args", {}):
        raise SpecError("validation is given twice: in data(...) and as a setting",
                        seen["validation"].key_span, hint="keep one of them")
