"""A spec's ``train NAME { ... }`` section as a ``TrainConfig``, with command-line overrides.

The front end stores the section in ``graph.spec.train`` (key -> value).  A value that
names something with arguments (``data mnist(validation=5000)``, ``optimizer adam(lr=1e-4)``,
``schedule cosine()``) is read as a call: a name plus keyword arguments (a first positional
argument is ``path`` for ``npz`` and ``lr`` for an optimizer).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from netlang.errors import ArgumentError, Span, UsageError, did_you_mean
from netlang.ir.types import DType
from netlang.train.optimizers import Optimizer, make_optimizer
from netlang.train.schedules import Schedule, make_schedule

KEYS = ("data", "optimizer", "batch", "epochs", "seed", "schedule", "validation",
        "weight_decay", "keep", "precision", "augment", "compress", "sync_batchnorm")
FIRST_POSITIONAL = {"npz": "path", "optimizer": "lr"}


@dataclass(frozen=True)
class Call:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    span: Span | None = None


@dataclass(frozen=True)
class TrainConfig:
    data: Call = Call("mnist")
    optimizer: Call = Call("adam")
    batch: int = 64
    epochs: int = 1
    seed: int = 0
    schedule: Call | None = None
    precision: Call | None = None     # mixed(dtype=bf16|f16), or f32 (None)
    augment: tuple[Call, ...] = ()    # shift(pixels), flip_lr: per batch, seeded
    weight_decay: float = 0.0
    keep: int = 0          # checkpoints of the last ``keep`` epochs kept besides last.ckpt
    compress: str | None = None   # f16: gradients sent between ranks as float16
    sync_batchnorm: bool = False  # batchnorm's batch moments over every rank's examples
    spans: dict[str, Span] = field(default_factory=dict)

    def make_optimizer(self, lr: float | None = None) -> Optimizer:
        args = dict(self.optimizer.args)
        if lr is not None:
            args["lr"] = lr
        return make_optimizer(self.optimizer.name, args, self.optimizer.span)

    def mixed_dtype(self, device: str = "cpu") -> DType | None:
        """The half dtype of ``precision mixed`` on ``device`` (unless told: bf16 on the CPU,
        f16 on the GPU, which CuPy's kernels and cuBLAS take), or None."""
        if self.precision is None or self.precision.name != "mixed":
            return None
        default = "f16" if device == "gpu" else "bf16"
        return DType(str(self.precision.args.get("dtype", default)))

    def make_schedule(self) -> Schedule:
        if self.schedule is None:
            return make_schedule(None)
        return make_schedule(self.schedule.name, self.schedule.args, self.schedule.span)

    def with_overrides(self, **given) -> TrainConfig:
        """The command line's ``--epochs/--batch/--seed`` win over the spec."""
        changes = {k: v for k, v in given.items() if v is not None}
        for key in ("epochs", "batch"):
            if key in changes and changes[key] < 1:
                raise UsageError(f"--{key} must be at least 1, got {changes[key]}")
        return replace(self, **changes)


def plain(value):
    """A literal from the front end's representation (numbers, strings, words, tuples)."""
    for attr in ("value", "id"):
        if hasattr(value, attr) and not hasattr(value, "func"):
            return plain(getattr(value, attr))
    if hasattr(value, "items") and isinstance(value.items, tuple):
        return tuple(plain(v) for v in value.items)
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def as_call(value, key: str, span: Span | None) -> Call:
    """``mnist``, ``mnist(validation=5000)``, ``("mnist", {...})`` or a dict, as a ``Call``."""
    if isinstance(value, Call):
        return value
    if isinstance(value, str):
        return Call(value, {}, span)
    if isinstance(value, dict) and "name" in value:
        return call_from_parts(value["name"], value.get("args", {}), key,
                               value.get("span", span))
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return call_from_parts(value[0], value[1], key, span)
    if hasattr(value, "func"):  # a syntax-tree call
        return call_from_parts(value.func, value.args, key, getattr(value, "span", span))
    if hasattr(value, "id"):
        return Call(value.id, {}, getattr(value, "span", span))
    raise ArgumentError(f"train: {key} needs a name such as {key} NAME(...), got {value!r}",
                        span)


def call_from_parts(name: str, args, key: str, span: Span | None) -> Call:
    if isinstance(args, dict):
        return Call(name, {k: plain(v) for k, v in args.items()}, span)
    out: dict[str, Any] = {}
    for position, arg in enumerate(args):
        arg_name = getattr(arg, "name", None)
        if arg_name is None:
            first = FIRST_POSITIONAL.get(name) or FIRST_POSITIONAL.get(key)
            if position != 0 or first is None:
                raise ArgumentError(f"{key} {name}: give arguments by name (key=value)",
                                    getattr(arg, "span", span))
            arg_name = first
        out[arg_name] = plain(getattr(arg, "value", arg))
    return Call(name, out, span)


def number(value, key: str, span: Span | None, kind=int, minimum=None):
    value = plain(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        kind is float or float(value).is_integer())
    if not ok or (minimum is not None and value < minimum):
        need = "an integer" if kind is int else "a number"
        low = f" >= {minimum}" if minimum is not None else ""
        raise ArgumentError(f"train: {key} must be {need}{low}, got {value!r}", span)
    return kind(value)


def entry_parts(section: dict) -> tuple[dict, dict]:
    """(key -> value, key -> span) whatever way the front end wrapped each value."""
    values, spans = {}, dict(section.get("spans", {}))
    for key, value in section.items():
        if key == "spans":
            continue
        if hasattr(value, "key") and hasattr(value, "value"):  # a syntax-tree entry
            spans.setdefault(key, getattr(value, "span", None))
            value = value.value
        values[key] = value
    return values, spans


def train_config(section: dict | None, network: str = "net") -> TrainConfig:
    """Read a spec's train section; unknown keys are errors that say which keys exist."""
    if not section:
        raise UsageError(f"network '{network}' has no train section",
                         hint=f"add: train {network} {{ data mnist(validation=5000); "
                              f"optimizer adam(lr=1e-3); batch 64; epochs 1 }}")
    values, spans = entry_parts(section)
    for key in values:
        if key not in KEYS:
            raise ArgumentError(f"train: unknown setting '{key}'", spans.get(key),
                                did_you_mean(key, KEYS) or f"settings: {', '.join(KEYS)}")
    get = (lambda k: spans.get(k))
    config = TrainConfig(spans={k: v for k, v in spans.items() if v is not None})
    changes: dict[str, Any] = {}
    if "data" in values:
        changes["data"] = as_call(values["data"], "data", get("data"))
    if "optimizer" in values:
        changes["optimizer"] = as_call(values["optimizer"], "optimizer", get("optimizer"))
    if "schedule" in values:
        changes["schedule"] = as_call(values["schedule"], "schedule", get("schedule"))
    if "augment" in values:
        items = values["augment"]
        items = items if isinstance(items, (list, tuple)) else [items]
        changes["augment"] = tuple(as_call(item, "augment", get("augment")) for item in items)
    if "precision" in values:
        changes["precision"] = as_call(values["precision"], "precision", get("precision"))
    for key, minimum in (("batch", 1), ("epochs", 1), ("seed", 0), ("keep", 1)):
        if key in values:
            changes[key] = number(values[key], key, get(key), int, minimum)
    if "compress" in values:
        choice = as_call(values["compress"], "compress", get("compress"))
        if choice.name not in ("f16", "none") or choice.args:
            raise ArgumentError(f"train: compress must be f16 or none, got {choice.name}",
                                get("compress"), "compress f16 sends gradients between ranks "
                                "as float16 (32 -> 16 -> 32)")
        changes["compress"] = None if choice.name == "none" else "f16"
    if "sync_batchnorm" in values:
        changes["sync_batchnorm"] = bool(plain(values["sync_batchnorm"]))
    if "weight_decay" in values:
        changes["weight_decay"] = number(values["weight_decay"], "weight_decay",
                                         get("weight_decay"), float, 0)
    if "validation" in values:  # a shorthand for the data set's validation argument
        data = changes.get("data", config.data)
        changes["data"] = replace(data, args={**data.args,
                                              "validation": plain(values["validation"])})
    return replace(config, **changes)
