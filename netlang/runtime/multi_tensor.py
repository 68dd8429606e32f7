"""The optimizer's update of many variables as one generated loop (a multi-tensor kernel).

The executor merges each variable's in-place update with its optimizer slots' into one loop
(``generated.merged_updates``: Adam's m, v and parameter read and written once per element).
A train step then still makes one such call per parameter, each with its Python wrapper and
kernel entry.  Here the loops of many variables that compute the same thing element by
element (the same optimizer arithmetic and dtypes: equal ``UpdateLoop.key``; the sizes may
differ) become ONE compiled function over a tuple of flat arrays per role (Numba's
``UniTuple``): one loop over chunks of the tensors, each chunk running the very element code
of the per-variable loop, so every element is computed by the same operations in the same
order and the results are bit for bit the same.  (A weight's decayed gradient ``g + wd*W``,
where fusion left it a call of its own, is computed in its unit's loop and stored nowhere:
``executor._update_units``.)

Which updates may run together (``group_units``): a unit joins a group at the group's first
unit only if everything it reads is computed before that place (its gradient is complete
there: where the updates interleave with the gradients, each waits for its own) and moving
it up reorders no dependency: nothing it reads is written by the calls it moves past (their
outputs, the variables they update in place, anything that may share their memory), and
nothing it writes is read or written by them.  A batchnorm's moving averages, updated
between the forward layers, stay where they are.

The loop (``kernel_source``): from ``PARALLEL_FROM`` elements in all, a ``prange`` over
chunks of ``CHUNK`` elements of every tensor (one parallel region, evenly split); below, one
thread runs one chunk per tensor.  ``tools/bench_multi_tensor.py`` (2-vCPU VM shared with
other jobs, load average ~2, 2026-12-06): mnist.net's Adam update alone (8 tensors, 1.1M
parameters, 21 x 20 calls) takes 0.71 ms as one call per tensor, 0.65 ms as one call on one
thread, 0.40 ms as a ``prange`` over chunks and 0.95 ms as an outer loop over the tensors
with a ``prange`` inside (a parallel region per tensor); a NumPy copy of the same bytes
1.21 ms.  Inside the train step (interleaved A/B, 40 rounds) the update takes 1.33 ms per
parameter, 1.26 ms as one call on one thread, and 7.9 ms with the chunks on two threads:
when the other core is busy the static split waits for it (libgomp's workers then slept
between regions).  With the workers spinning a while between regions (runtime/threads.py),
quiet machine, 15 rounds: 1.29 ms per parameter, 1.17 ms as one call on two threads.  So the
threads take the chunks from the size every generated loop does (``generated.SERIAL_BELOW``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from netlang.runtime import jit
from netlang.runtime.generated import SERIAL_BELOW, UpdateLoop

# Elements per chunk of a parallel loop: enough for a vectorised inner loop to amortise the
# chunk's setup, small enough for two threads to split a 1M-element tensor evenly.
CHUNK = 1 << 16
# From this many elements in all the chunks go to the threads (``prange``), as every
# generated loop does from ``generated.SERIAL_BELOW`` (see the module doc).
PARALLEL_FROM = SERIAL_BELOW


@dataclass(frozen=True)
class Unit:
    """One variable's update (and its slots') as one loop: ``loop`` over the bound program's
    calls ``indices``, its ``written`` members writing into ``env[targets[...]]`` in order."""

    indices: range
    loop: UpdateLoop
    targets: tuple


def group_units(units: Sequence[Unit], reads: Sequence[frozenset],
                writes: Sequence[frozenset]) -> list[list[Unit]]:
    """The units in groups that may run as one call at their first unit's place (see the
    module doc), in program order; a unit joins the oldest group of its kind that it may,
    and one that joins none starts a group (of one, if no other joins it).

    ``reads[i]``, ``writes[i]``: the values call ``i`` of the step may read (its arguments
    and whatever they may be views of) and write (its output, and the variable it writes
    over in place)."""
    made = {}
    for i, written in enumerate(writes):
        for value in written:
            made.setdefault(value, i)
    groups: list[list[Unit]] = []
    alike: dict[tuple, list[list[Unit]]] = {}      # the groups of each key, oldest first
    for unit in units:
        candidates = alike.setdefault(unit.loop.key(), [])
        group = next((g for g in candidates if _may_join(g, unit, made, reads, writes)), None)
        if group is None:
            group = []
            candidates.append(group)
            groups.append(group)
        group.append(unit)
    return groups


def _may_join(group: list[Unit], unit: Unit, made: dict, reads, writes) -> bool:
    """Whether ``unit`` may run at ``group``'s first unit's place ``head``: all it reads is
    made before ``head`` (its gradient is complete there; it stays alive until the unit,
    so no planned buffer is reused for another value in between), and it swaps no read and
    write with the calls it moves past."""
    head = group[0].indices[0]
    members = {i for u in group for i in u.indices}
    mine_read = frozenset().union(*(reads[i] for i in unit.indices))
    mine_written = frozenset().union(*(writes[i] for i in unit.indices))
    inside = set(unit.indices)
    if any(made.get(value, -1) >= head and made[value] not in inside for value in mine_read):
        return False
    passed = [i for i in range(head, unit.indices[0]) if i not in members]
    return not any(mine_read & writes[i] or mine_written & (reads[i] | writes[i])
                   for i in passed)


def kernel_source(loop: UpdateLoop, from_out: bool, shared: set[int], parallel: bool) -> str:
    """The Python text of ``updates(...)`` over many tensors: ``xs{i}`` a tuple of flat arrays
    (or of numbers) for each argument of ``loop.element`` that differs per tensor, ``x{i}``
    a number all share, ``outs{m}`` a tuple of the flat arrays member ``m`` writes (each
    of ``loop.written``), and
    ``chunks`` an int64 ``[n, 3]`` table of (tensor, start, stop)."""
    passed, _, lines = loop.element(from_out)
    full = [i for i in passed if loop.kinds[i] == "full"]
    each = [i for i in passed if loop.kinds[i] == "scalar" and i not in shared]
    names = [f"x{i}" if i in shared else f"xs{i}" for i in passed]
    names += [f"outs{m}" for m in loop.written] + ["chunks"]
    once = [f"    e{i} = x{i}" for i in passed if i in shared]
    return "\n".join([
        "import math", "", "import numpy as np", "",
        "from netlang.runtime.jit import kernel, prange", "", "",
        f"@kernel(parallel={parallel})", f"def updates({', '.join(names)}):", *once,
        f"    for c in {'prange' if parallel else 'range'}(chunks.shape[0]):",
        "        t = chunks[c, 0]", "        start = chunks[c, 1]", "        stop = chunks[c, 2]",
        *[f"        x{i} = xs{i}[t][start:stop]" for i in full],
        *[f"        e{i} = xs{i}[t]" for i in each],
        *[f"        out{m} = outs{m}[t][start:stop]" for m in loop.written],
        f"        for k in range(out{loop.written[0]}.shape[0]):",
        *["    " + line for line in lines], ""])


def chunk_table(sizes: Sequence[int], chunk: int | None) -> np.ndarray:
    """(tensor, start, stop) rows covering every tensor, ``chunk`` elements at most each
    (None: one row per tensor)."""
    rows = [(t, start, min(size, start + (chunk or size)))
            for t, size in enumerate(sizes) for start in range(0, size, chunk or size or 1)]
    return np.array(rows, np.int64).reshape(-1, 3)


def multi_tensor_updates(units: Sequence[Unit], parallel: bool | None = None
                         ) -> tuple[Callable, tuple]:
    """One call running every unit's loop (see the module doc).  Returns ``(run, args)``:
    ``run(*arrays)`` takes the values of ``args`` (each unit's ``loop.args`` and then its
    targets, unit after unit) and returns the first unit's first target.  Where every
    member of every unit writes over the variable it updates, the loop reads each from its
    target; else (one update written into a spare) from the variable's own array, as
    ``merged_updates`` does.  ``run.tensors`` says how many tensors it updates per role,
    ``run.in_registers`` how many members' results it stores nowhere.
    ``parallel`` None: a ``prange`` over chunks from ``PARALLEL_FROM`` elements in all."""
    loop = units[0].loop
    sizes = [u.loop.size for u in units]
    if parallel is None:
        parallel = sum(sizes) >= PARALLEL_FROM
    chunks = chunk_table(sizes, CHUNK if parallel else None)
    # an argument that every unit reads from the same value (Adam's step size) is passed once
    shared = {i for i in range(len(loop.args)) if loop.kinds[i] == "scalar"
              and len({u.loop.args[i] for u in units}) == 1}
    count, n = len(loop.written), len(units)
    kernels = {}
    for from_out in (True, False):
        passed = loop.element(from_out)[0]
        fn = jit.compile_source(kernel_source(loop, from_out, shared, parallel), "updates",
                                f"multi-tensor {loop.label()}"[:60])
        kernels[from_out] = fn, passed
    run = _bind_call(units, kernels, shared, chunks)
    # The loop that runs every step compiles now (or once the program is bound); the other
    # (a variable held by the caller, updated into a spare) on its first call, if ever: a
    # first-ever run saves its compile (mnist.net: 4.6 s for the two).
    fn, passed = kernels[True]
    jit.compile_now(fn, [(loop.dtypes[i].numpy, int(loop.kinds[i] == "full"))
                         + (() if i in shared else (n,)) for i in passed]
                    + [(loop.out_dtype, 1, n)] * count + [(np.int64, 2)], owner=run)
    run.tensors = n
    run.in_registers = sum(len(u.loop.groups) - len(u.loop.written) for u in units)
    args = tuple(a for u in units for a in (*u.loop.args, *u.targets))
    return run, args


def _bind_call(units: Sequence[Unit], kernels: dict, shared: set, chunks) -> Callable:
    """The generated Python call that gathers the arrays into the kernel's tuples (one line,
    no loop: it runs every step)."""
    where, at = [], 0               # per unit: the position of its first argument in run's
    for unit in units:
        where.append(at)
        at += len(unit.loop.args) + len(unit.targets)
    names = [f"a{k}" for k in range(at)]
    loop = units[0].loop

    def arg(u: int, i: int) -> str:
        return names[where[u] + i]

    def target(u: int, m: int) -> str:
        """The array member ``m`` of unit ``u`` writes."""
        return names[where[u] + len(units[u].loop.args) + loop.written.index(m)]

    def call(kernel: str, passed: list[int]) -> str:
        parts = []
        for i in passed:
            if loop.kinds[i] == "full":
                parts.append("(" + "".join(f"flat({arg(u, i)}), " for u in range(len(units)))
                             + ")")
            elif i in shared:
                parts.append(f"{arg(0, i)}.reshape(-1)[0]")
            else:
                parts.append("(" + "".join(f"{arg(u, i)}.reshape(-1)[0], "
                                           for u in range(len(units))) + ")")
        parts += ["(" + "".join(f"{target(u, m)}.reshape(-1), " for u in range(len(units)))
                  + ")" for m in loop.written]
        return f"{kernel}({', '.join(parts)}, chunks)"

    in_place = " and ".join(f"{target(u, m)} is {arg(u, i)}" for u, unit in enumerate(units)
                            for m, i in unit.loop.overwritten.items()) or "False"
    lines = [f"def run({', '.join(names)}):", f"    if {in_place}:",
             f"        {call('in_place', kernels[True][1])}", "    else:",
             f"        {call('apart', kernels[False][1])}",
             f"    return {target(0, loop.written[0])}", ""]
    scope = {"in_place": kernels[True][0], "apart": kernels[False][0], "chunks": chunks,
             "flat": lambda x: np.ascontiguousarray(x).reshape(-1)}
    exec(compile("\n".join(lines), "<multi-tensor update call>", "exec"), scope)  # noqa: S102
    return scope["run"]
