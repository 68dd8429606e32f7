"""Finding where a NaN or an infinity came from.

Checking every value of every step would slow training down, so the loop checks only the
loss.  When it stops being finite, the step is run again from a copy of the state before
it (arrays are never written in place, so keeping the previous state costs one dict copy a
step) with the executor's ``on_step`` hook checking each value, and the first non-finite
one is named with its op, scope and spec line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netlang.errors import NetlangError, NonFiniteError
from netlang.runtime.state import State


@dataclass
class StepRecord:
    """What re-running one step needs: the state and RNG before it, and its feeds."""

    step: int
    arrays: dict[str, Any]
    rng_state: dict
    feeds: dict[str, np.ndarray]


def rerun_checked(session, fetches: list[str], record: StepRecord):
    """Run the step of ``record`` again, watching for the first non-finite float value.

    Returns ``(node, numpy value)`` or None.  The run goes on to the end on a scratch copy of
    the state (NaNs just propagate); the session's state, hook and RNG are restored.
    """
    xp = session.backend.xp
    scratch = State(session.backend)
    scratch.arrays = dict(record.arrays)
    found: list = []

    def check(node, value):
        dtype = getattr(value, "dtype", None)
        if not found and dtype is not None and dtype.kind == "f" and not bool(
                xp.isfinite(value).all()):
            found.append((node, session.backend.to_numpy(value)))

    saved = (session.state, session.executor.on_step, session.rng.bit_generator.state)
    session.state, session.executor.on_step = scratch, check
    session.rng.bit_generator.state = record.rng_state
    try:
        with np.errstate(all="ignore"):
            session.run(fetches, record.feeds, training=True, updates=True)
    except NetlangError:
        if not found:
            raise
    finally:
        session.state, session.executor.on_step = saved[0], saved[1]
        session.rng.bit_generator.state = saved[2]
    return found[0] if found else None


def describe_values(value: np.ndarray) -> str:
    value = np.asarray(value)
    parts = [f"{int(np.isnan(value).sum())} nan" if np.isnan(value).any() else "",
             f"{int(np.isposinf(value).sum())} +inf" if np.isposinf(value).any() else "",
             f"{int(np.isneginf(value).sum())} -inf" if np.isneginf(value).any() else ""]
    return f"{', '.join(p for p in parts if p)} of {value.size} values"


def describe_node(node) -> str:
    if node.op == "input":
        return f"input '{node.name}' was fed non-finite values"
    if node.op in ("param", "state"):
        return f"{node.op} '{node.name}' already held non-finite values"
    where = "the optimizer update" if "optimizer" in node.tags else (
        "the backward pass" if "grad" in node.tags else "the forward pass")
    scope = f" in scope '{node.scope}'" if node.scope else ""
    return f"{node.op} (%{node.id}: {node.type}){scope}, in {where}"


def nonfinite_error(loss_name: str, loss_value: float, step: int, epoch: int,
                    session, fetches: list[str], history: list[StepRecord]) -> NonFiniteError:
    """The error to stop training with: the step, and the first op that went non-finite.

    ``history`` holds the records of the last steps, oldest first; the earliest one whose
    re-run meets a non-finite value is the step that produced it.
    """
    head = f"the loss '{loss_name}' became {loss_value} at step {step} (epoch {epoch})"
    for record in history:
        found = rerun_checked(session, fetches, record)
        if found is None:
            continue
        node, value = found
        when = "" if record.step == step else f" (produced at step {record.step})"
        message = (f"{head}; the first non-finite value{when}: {describe_node(node)}: "
                   f"{describe_values(value)}")
        return NonFiniteError(message, node.span, hint=HINT)
    return NonFiniteError(f"{head}; re-running the step did not reproduce it", hint=HINT)


def nonfinite_arrays(session) -> list[str]:
    """Names of the session's float state arrays that hold a NaN or an infinity."""
    xp = session.backend.xp
    return [name for name, value in session.state.arrays.items()
            if getattr(value, "dtype", None) is not None and value.dtype.kind == "f"
            and not bool(xp.isfinite(value).all())]


def nonfinite_state_error(path, names: list[str], step: int, epoch: int, session,
                          fetches: list[str], history: list[StepRecord]) -> NonFiniteError:
    """The error to stop with instead of saving non-finite parameters: an update after the
    last loss check (the epoch's last step) wrote them.  Names the arrays and the first op
    that went non-finite, found by re-running the recorded steps."""
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    head = (f"not saving {path}: {shown} became non-finite at step {step} (epoch {epoch}), "
            f"after its loss was checked")
    for record in history:
        found = rerun_checked(session, fetches, record)
        if found is not None:
            node, value = found
            return NonFiniteError(f"{head}; the first non-finite value: {describe_node(node)}: "
                                  f"{describe_values(value)}", node.span, hint=SAVE_HINT)
    return NonFiniteError(head, hint=SAVE_HINT)


HINT = ("lower the learning rate, or keep log/div/sqrt away from zero "
        "(for example log(x + 1e-7))")
SAVE_HINT = HINT + "; any earlier checkpoint is kept"
