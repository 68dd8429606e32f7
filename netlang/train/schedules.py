"""Learning-rate schedules: the step's learning rate as a function of the step number.

The rate is fed to the train step as a scalar input each step, so a schedule is plain
Python arithmetic on the step count (a resumed run recomputes it exactly).  Periods are in
epochs, the unit a spec's ``epochs`` line uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from netlang.errors import ArgumentError, Span, did_you_mean

SCHEDULES: dict[str, dict[str, Any]] = {
    "constant": {},
    "step": {"every": 1.0, "factor": 0.1},           # lr * factor^floor(epoch / every)
    "exponential": {"every": 1.0, "factor": 0.96},   # lr * factor^(epoch / every)
    "cosine": {"min": 0.0, "warmup": 0.0},           # half a cosine from lr to min*lr
}


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    args: dict[str, Any] = field(default_factory=dict)

    def rate(self, base: float, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """The learning rate of step ``step`` (counted from 0)."""
        epoch = step / max(steps_per_epoch, 1)
        a = self.args
        if self.kind == "step":
            return base * a["factor"] ** math.floor(epoch / a["every"])
        if self.kind == "exponential":
            return base * a["factor"] ** (epoch / a["every"])
        if self.kind == "cosine":
            warm = a["warmup"] * steps_per_epoch
            if step < warm:
                return base * (step + 1) / warm
            progress = (step - warm) / max(total_steps - warm, 1)
            cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
            return base * (a["min"] + (1.0 - a["min"]) * cosine)
        return base

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.kind}({args})"


def make_schedule(kind: str | None, args: dict | None = None,
                  span: Span | None = None) -> Schedule:
    if kind is None:
        return Schedule()
    if kind not in SCHEDULES:
        hint = did_you_mean(kind, SCHEDULES) or f"known schedules: {', '.join(SCHEDULES)}"
        raise ArgumentError(f"unknown schedule '{kind}'", span, hint)
    allowed = SCHEDULES[kind]
    for key, value in (args or {}).items():
        if key not in allowed:
            hint = did_you_mean(key, allowed) or (
                f"{kind} takes: {', '.join(allowed) or 'no arguments'}")
            raise ArgumentError(f"schedule {kind} has no argument '{key}'", span, hint)
        if not isinstance(value, (int, float)) or value < 0:
            raise ArgumentError(f"schedule {kind}: {key} must be a number >= 0, got {value}",
                                span)
    merged = {**allowed, **(args or {})}
    if kind in ("step", "exponential") and merged["every"] <= 0:
        raise ArgumentError(f"schedule {kind}: every must be > 0", span)
    return Schedule(kind, merged)
