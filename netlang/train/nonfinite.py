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
from netlang.ir.types import is_float_dtype
from netlang.model import Model, Session
from netlang.ops.fused import input_ref, step_ref
from netlang.ops.registry import get_op
from netlang.passes.pipeline import without
from netlang.runtime.executor import Executor
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

    Returns ``(node, numpy value, inner)`` or None, ``inner`` as ``first_nonfinite`` gives
    it.  The run goes on to the end on a scratch copy of the state (NaNs just propagate);
    the session's state, hook and RNG are restored.
    """
    return first_nonfinite(session, fetches, record.feeds, training=True, updates=True,
                           arrays=record.arrays, rng_state=record.rng_state)


def first_nonfinite(session, fetches: list[str], feeds: dict, training: bool, updates: bool,
                    arrays: dict[str, Any], rng_state: dict):
    """The first value that is not finite when ``fetches`` run again from ``arrays`` and
    ``rng_state``: ``(node, numpy value, inner)`` or None.  For a fused node ``inner`` is
    ``(step index, op, span)``: the first step of its group that went non-finite (the value
    is then that step's), found by replaying the group on its inputs (kept by a second
    run), and that op's own spec location (a group keeps only its last op's), found by a run
    without fusion; else None."""
    run = (fetches, feeds, training, updates, arrays, rng_state)
    found, _ = _watched_run(session, *run)
    if found is None:
        return None
    node, value = found
    if node.op != "fused":
        return node, value, None
    _, kept = _watched_run(session, *run, keep=frozenset(node.inputs))
    if not all(i in kept for i in node.inputs):
        return node, value, None
    step = first_nonfinite_step(node.attrs["expr"], [kept[i] for i in node.inputs])
    if step is None:
        return node, value, None
    index, op, step_value = step
    unfused, _ = _watched_run(_unfused_session(session), *run)
    span = unfused[0].span if unfused is not None and unfused[0].op == op else None
    return node, step_value, (index, op, span)


def _unfused_session(session):
    """A session of the same graph whose programs skip the fusion passes (each op its own
    node, with its own spec location).  It shares the session's backend and RNG rather than
    initializing parameters anew; ``_watched_run`` gives it the state to run from."""
    model = session.model
    twin = Model(model.graph, model.steps, model.lowered,
                 without(model.passes, "batchnorm", "fusion"))
    other = Session.__new__(Session)
    other.__dict__.update(session.__dict__, model=twin, _ids={}, _plans={})
    other.executor = Executor(session.backend, session.rng)
    return other


def _watched_run(session, fetches, feeds, training, updates, arrays, rng_state,
                 keep=frozenset()):
    """One run on a scratch copy of ``arrays`` with an ``on_step`` hook: the first non-finite
    ``(node, numpy value)`` or None, and the numpy values of the node ids in ``keep``."""
    xp = session.backend.xp
    scratch = State(session.backend)
    scratch.arrays = dict(arrays)
    found: list = []
    kept: dict[int, np.ndarray] = {}

    def check(node, value):
        if node.id in keep:
            kept[node.id] = session.backend.to_numpy(value)
        dtype = getattr(value, "dtype", None)
        if not found and dtype is not None and is_float_dtype(dtype) and not bool(
                xp.isfinite(value).all()):
            found.append((node, session.backend.to_numpy(value)))

    saved = (session.state, session.executor.on_step, session.rng.bit_generator.state)
    session.state, session.executor.on_step = scratch, check
    session.rng.bit_generator.state = rng_state
    try:
        with np.errstate(all="ignore"):
            session.run(fetches, feeds, training=training, updates=updates)
    except NetlangError:
        if not found:
            raise
    finally:
        session.state, session.executor.on_step = saved[0], saved[1]
        session.rng.bit_generator.state = saved[2]
    return (found[0] if found else None), kept


def first_nonfinite_step(expr: tuple, inputs: list[np.ndarray]) -> tuple | None:
    """``(index, op, value)`` of the first step of a fused group's ``expr`` whose value is
    not finite, replaying the steps with each op's reference kernel on NumPy."""
    env = {input_ref(i): a for i, a in enumerate(inputs)}
    with np.errstate(all="ignore"):
        for j, (op, args, attrs) in enumerate(expr):
            value = np.asarray(get_op(op).kernel(np, *[env[a] for a in args], **dict(attrs)))
            if is_float_dtype(value.dtype) and not np.isfinite(value).all():
                return j, op, value
            env[step_ref(j)] = value
    return None


def describe_values(value: np.ndarray) -> str:
    value = np.asarray(value)
    parts = [f"{int(np.isnan(value).sum())} nan" if np.isnan(value).any() else "",
             f"{int(np.isposinf(value).sum())} +inf" if np.isposinf(value).any() else "",
             f"{int(np.isneginf(value).sum())} -inf" if np.isneginf(value).any() else ""]
    return f"{', '.join(p for p in parts if p)} of {value.size} values"


def describe_node(node, inner: tuple | None = None) -> str:
    """``log (%12: f32[N,2]) in scope 'fc1', in the forward pass``; for a step of a fused
    group: ``log (step 1 of 3 in the fused group %12: f32[N,2]), in the forward pass``,
    with ``, whose last op is at lognet.net:6:7`` when the step's own line is unknown."""
    if node.is_source("input"):
        return f"input '{node.name}' was fed non-finite values"
    if node.is_variable():
        return f"{node.op} '{node.name}' already held non-finite values"
    where = "the optimizer update" if "optimizer" in node.tags else (
        "the backward pass" if "grad" in node.tags else "the forward pass")
    scope = f" in scope '{node.scope}'" if node.scope else ""
    if node.op == "fused":
        expr = node.attrs["expr"]
        if inner is None:
            ops = ", ".join(step[0] for step in expr)
            return f"fused [{ops}] (%{node.id}: {node.type}){scope}, in {where}"
        index, op, span = inner
        at = f", whose last op is at {node.span.short()}" if span is None and node.span else ""
        return (f"{op} (step {index + 1} of {len(expr)} in the fused group %{node.id}: "
                f"{node.type}{at}){scope}, in {where}")
    return f"{node.op} (%{node.id}: {node.type}){scope}, in {where}"


def nonfinite_span(node, inner: tuple | None):
    """Where to point: the step's own line inside a fused group, else the node's."""
    return inner[2] if inner is not None and inner[2] is not None else node.span


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
        node, value, inner = found
        when = "" if record.step == step else f" (produced at step {record.step})"
        message = (f"{head}; the first non-finite value{when}: {describe_node(node, inner)}: "
                   f"{describe_values(value)}")
        return NonFiniteError(message, nonfinite_span(node, inner), hint=HINT)
    return NonFiniteError(f"{head}; re-running the step did not reproduce it", hint=HINT)


def nonfinite_arrays(session) -> list[str]:
    """Names of the session's float state arrays that hold a NaN or an infinity."""
    xp = session.backend.xp
    return [name for name, value in session.state.arrays.items()
            if getattr(value, "dtype", None) is not None and is_float_dtype(value.dtype)
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
            node, value, inner = found
            return NonFiniteError(f"{head}; the first non-finite value: "
                                  f"{describe_node(node, inner)}: "
                                  f"{describe_values(value)}", nonfinite_span(node, inner),
                                  hint=SAVE_HINT)
    return NonFiniteError(head, hint=SAVE_HINT)


HINT = ("lower the learning rate, or keep log/div/sqrt away from zero "
        "(for example log(x + 1e-7))")
SAVE_HINT = HINT + "; any earlier checkpoint is kept"
