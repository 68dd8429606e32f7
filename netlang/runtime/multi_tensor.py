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

The call's arguments (``FlatCall``): a tuple of 25-300 arrays built every step cost more than
the small models' loops (spiral's 6-tensor Adam: 11 us a call, ~7 of them the tuples).  So
parameters and slots lie side by side in the state's ``VariableArena`` and gradients in the
buffer plan's arena (``runtime/ownership.py``), and the kernel takes one block per role and
a table of offsets, checked against the arrays' ids each step.  The update inside the step
(``netlang bench --profile``, batch 64 / 256, two interleaved runs each, quiet machine,
2026-12-06, ms): spiral 0.013-0.015 -> 0.007-0.008, mnist_small 0.029-0.034 ->
0.015-0.019, residual 0.18-0.27 -> 0.10-0.14.  What is left is not arithmetic: the Python
around the kernel (ids of every array, the in-place test) takes 1.9 us of spiral's 5.7 us
call when repeated, and inside a step every array object and every tensor's memory was last
touched a step ago (residual's 7-tensor call over batchnorm's 160 parameters: 6 us repeated,
28 us in the step).  Against one NumPy copy of the same bytes last touched 64 MiB ago (the
bench's cold floor) the update takes 0.8x (spiral), 1.7-2.1x (mnist_small), 1.1-1.8x
(residual), 0.2-0.3x (mnist, two threads).  Steps over the same variables as the last
now skip those checks (``Trusted``).  That cold floor is a copy timed between steps, in a
warm interpreter; Python inside a step runs on a cold cache too (see ``Trusted``), so the
bench also times the copy where the update starts (``netlang bench --profile``'s "in the
step"; ``cli.bench.UpdateSpans``): against it the update takes 0.6-1.2x (spiral), 0.8-1.3x
(mnist_small), 0.9-1.2x (residual), 0.4-0.5x (mnist; two runs, busy host, 2026-12-07).

``netlang train`` keeps the state's dict from before each of the last two steps (to re-run
a step whose loss is not finite), so there no update writes over its variable: each goes
into a spare (``executor.Spares``), and the call runs its loop reading the variables apart.
Spares come a generation at a time in one ``VariableArena``, so that loop also runs flat,
on the three generations the loop takes in turn (one layout each).  Whole steps holding
such a copy (spiral, ms, two interleaved runs, quiet machine): batch 64 0.149 / 0.158 ->
0.145 / 0.147, batch 256 0.251 / 0.265 -> 0.239 / 0.249; mnist_small within noise.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from netlang.runtime import jit
from netlang.runtime.generated import SERIAL_BELOW, UpdateLoop

if TYPE_CHECKING:
    from netlang.runtime.executor import LastState

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


def kernel_source(loop: UpdateLoop, from_out: bool, shared: set[int], parallel: bool,
                  flat: bool = False, held: frozenset = frozenset()) -> str:
    """The Python text of ``updates(...)`` over many tensors: ``xs{i}`` a tuple of flat arrays
    (or of numbers) for each argument of ``loop.element`` that differs per tensor, ``x{i}``
    a number all share, ``outs{m}`` a tuple of the flat arrays member ``m`` writes (each
    of ``loop.written``), and
    ``chunks`` an int64 ``[n, 3]`` table of (tensor, start, stop).  ``held``: the shared
    numbers passed as a 1-element array each (the loop reads its element).

    ``flat``: each ``xs{i}`` of an array argument and each ``outs{m}`` is ONE flat array
    holding every tensor's elements somewhere (``flat_layout``), and ``chunks`` an int64
    ``[n, 2 + roles]`` table of (tensor, length, then each such array's offset in order)."""
    passed, _, lines = loop.element(from_out)
    full = [i for i in passed if loop.kinds[i] == "full"]
    each = [i for i in passed if loop.kinds[i] == "scalar" and i not in shared]
    names = [f"x{i}" if i in shared else f"xs{i}" for i in passed]
    names += [f"outs{m}" for m in loop.written] + ["chunks"]
    once = [f"    e{i} = x{i}{'[0]' if i in held else ''}" for i in passed if i in shared]
    if flat:
        column = {name: 2 + r for r, name in enumerate(
            [f"xs{i}" for i in full] + [f"outs{m}" for m in loop.written])}
        where = ["        t = chunks[c, 0]", "        n = chunks[c, 1]"]

        def part(name: str) -> str:
            return f"{name}[chunks[c, {column[name]}]:chunks[c, {column[name]}] + n]"
    else:
        where = ["        t = chunks[c, 0]", "        start = chunks[c, 1]",
                 "        stop = chunks[c, 2]"]

        def part(name: str) -> str:
            return f"{name}[t][start:stop]"
    return "\n".join([
        "import math", "", "import numpy as np", "",
        "from netlang.runtime.jit import kernel, prange", "", "",
        f"@kernel(parallel={parallel})", f"def updates({', '.join(names)}):", *once,
        f"    for c in {'prange' if parallel else 'range'}(chunks.shape[0]):", *where,
        *[f"        x{i} = {part(f'xs{i}')}" for i in full],
        *[f"        e{i} = xs{i}[t]" for i in each],
        *[f"        out{m} = {part(f'outs{m}')}" for m in loop.written],
        f"        for k in range(out{loop.written[0]}.shape[0]):",
        *["    " + line for line in lines], ""])


def chunk_table(sizes: Sequence[int], chunk: int | None) -> np.ndarray:
    """(tensor, start, stop) rows covering every tensor, ``chunk`` elements at most each
    (None: one row per tensor)."""
    rows = [(t, start, min(size, start + (chunk or size)))
            for t, size in enumerate(sizes) for start in range(0, size, chunk or size or 1)]
    return np.array(rows, np.int64).reshape(-1, 3)


def flat_layout(roles: Sequence[Sequence[np.ndarray]], sizes: Sequence[int],
                chunk: int | None) -> tuple[tuple, np.ndarray] | None:
    """Where every role's arrays (one per tensor, in order) lie in one block of memory each:
    ``(the blocks as flat writeable arrays, the (tensor, length, offset per role) table of
    ``chunk`` elements at most per row)``, or None where some role's arrays do not share one
    (each a C-contiguous writeable ndarray of the tensor's size, on its dtype's alignment,
    all viewing the same owner).  A parameter's place in the state's ``VariableArena`` and
    a gradient's planned buffer are such arrays (``runtime/ownership.py``)."""
    blocks, offsets = [], []
    for arrays in roles:
        first = arrays[0]
        owner = first if first.base is None else first.base
        dtype = first.dtype
        try:
            raw = np.frombuffer(owner, np.uint8)
        except (TypeError, ValueError, BufferError):
            return None
        block = raw[:raw.size - raw.size % dtype.itemsize].view(dtype)
        start = block.ctypes.data
        mine = []
        for array, size in zip(arrays, sizes):
            if (type(array) is not np.ndarray or (array.base if array.base is not None
                                                  else array) is not owner
                    or array.dtype != dtype or array.size != size
                    or not (array.flags.c_contiguous and array.flags.writeable)):
                return None
            at, rest = divmod(array.ctypes.data - start, dtype.itemsize)
            if rest or at < 0 or at + size > block.size:
                return None
            mine.append(at)
        if not block.flags.writeable:
            return None
        blocks.append(block)
        offsets.append(mine)
    rows = [(t, min(size, begin + (chunk or size)) - begin,
             *(mine[t] + begin for mine in offsets))
            for t, size in enumerate(sizes) for begin in range(0, size, chunk or size or 1)]
    return tuple(blocks), np.array(rows, np.int64).reshape(-1, 2 + len(roles))


def multi_tensor_updates(units: Sequence[Unit], parallel: bool | None = None,
                         same: LastState | None = None, fixed: frozenset = frozenset(),
                         constants: frozenset = frozenset()) -> tuple[Callable, tuple]:
    """One call running every unit's loop (see the module doc).  Returns ``(run, args)``:
    ``run(*arrays)`` takes the values of ``args`` (each unit's ``loop.args`` and then its
    targets, unit after unit) and returns the first unit's first target.  Where every
    member of every unit writes over the variable it updates, the loop reads each from its
    target; else (one update written into a spare) from the variable's own array, as
    ``merged_updates`` does.  Where, besides, each role's arrays lie in one block of memory
    (``flat_layout``), the call passes the blocks and a table of offsets instead of tuples
    of arrays (``FlatCall``).  ``run.tensors`` says how many tensors it updates per role,
    ``run.in_registers`` how many members' results it stores nowhere, ``run.flat`` and
    ``run.flat_apart`` the ``FlatCall`` in place and apart, ``run.trusted`` the ``Trusted``
    or None.
    ``parallel`` None: a ``prange`` over chunks from ``PARALLEL_FROM`` elements in all.
    ``same``: the bound program's ``LastState``, and ``fixed`` the values that are the same
    object in every run whose updates write over the same variables: where every array the
    call takes is one, it skips its checks in such runs (``Trusted``)."""
    loop = units[0].loop
    sizes = [u.loop.size for u in units]
    if parallel is None:
        parallel = sum(sizes) >= PARALLEL_FROM
    chunks = chunk_table(sizes, CHUNK if parallel else None)
    # an argument that every unit reads from the same value (Adam's step size) is passed once
    shared = {i for i in range(len(loop.args)) if loop.kinds[i] == "scalar"
              and len({u.loop.args[i] for u in units}) == 1}
    count, n = len(loop.written), len(units)
    label = f"multi-tensor {loop.label()}"[:60]
    kernels = {}
    for from_out in (True, False):
        passed = loop.element(from_out)[0]
        fn = jit.compile_source(kernel_source(loop, from_out, shared, parallel), "updates",
                                label)
        kernels[from_out] = fn, passed
    arrays = {a for u in units for a, kind in zip(u.loop.args, u.loop.kinds) if kind != "scalar"}
    trusted = None
    held: frozenset = frozenset()
    if same is not None and arrays <= fixed:
        # a number computed every step into the same buffer (Adam's step size): the flat
        # loop reads it from that buffer, so a trusted run passes all it passed before
        held = frozenset(i for i in shared if loop.args[i] in fixed - constants)
        trusted = Trusted(same, {i for i in shared if loop.args[i] in constants} | held)
    flats = {from_out: FlatCall(jit.compile_source(
        kernel_source(loop, from_out, shared, parallel, flat=True, held=held), "updates",
        label), sizes, CHUNK if parallel else None) for from_out in (True, False)}
    run = _bind_call(units, kernels, shared, chunks, flats, trusted, held)
    # The loops that run every step compile now (or once the program is bound): the flat
    # ones, in place (a caller that holds no variable) and apart (a train loop, whose copy
    # of the state before each step holds every variable: updates go into spares); the
    # tuple kernels (arrays that do not lie in one block each) on their first call, if
    # ever: a first-ever run saves their compile (mnist.net: 4.6 s for two).
    for from_out, flat_call in flats.items():
        passed = kernels[from_out][1]
        jit.compile_now(flat_call.kernel,
                        [(loop.dtypes[i].numpy, int(loop.kinds[i] == "full" or i in held))
                         + (() if i in shared or loop.kinds[i] == "full" else (n,))
                         for i in passed]
                        + [(loop.out_dtype, 1)] * count + [(np.int64, 2)], owner=run)
    run.tensors = n
    run.in_registers = sum(len(u.loop.groups) - len(u.loop.written) for u in units)
    run.flat, run.flat_apart, run.trusted = flats[True], flats[False], trusted
    args = tuple(a for u in units for a in (*u.loop.args, *u.targets))
    return run, args


class FlatCall:
    """The flat kernel of a multi-tensor update and the layouts it ran on.

    ``current``: ``(the ids of the arrays it checked, block, ..., table)`` of the last step,
    or None; ``layouts`` the ones before, by ids.  A step whose arrays are the same objects
    as a known layout's (their ids equal, and none of them freed since: a weak reference's
    callback forgets the layout) runs the kernel on the blocks with no Python work per
    tensor: each step where updates go in place, and the generations of spares a train
    loop's updates take in turn (``executor.Spares``).  Other arrays get a new layout
    (``find``), or, where they do not lie in blocks, the tuple kernels.  Arrays that change
    every step stop the attempts after ``TRIES`` new layouts."""

    TRIES = 16

    def __init__(self, kernel: Callable, sizes: Sequence[int], chunk: int | None):
        self.kernel, self.sizes, self.chunk = kernel, list(sizes), chunk
        self.current: tuple | None = None
        self.layouts: dict[tuple, tuple] = {}
        self.tries = 0
        self.calls = 0                  # steps run on the flat kernel (for tests, bench)
        self._refs: dict[tuple, list] = {}

    def find(self, ids: tuple, roles: tuple) -> tuple | None:
        """The layout of these arrays (per role, one per tensor), now current; None where
        they do not lie in blocks (or the tries are spent)."""
        current = self.layouts.get(ids)
        if current is None:
            current = self._layout(ids, roles)
        self.current = current
        return current

    def _layout(self, ids: tuple, roles: tuple) -> tuple | None:
        if self.tries >= self.TRIES:
            return None
        self.tries += 1
        made = flat_layout(roles, self.sizes, self.chunk)
        if made is None:
            return None
        blocks, table = made
        current = (ids, *blocks, table)

        def forget(_, ids=ids):
            gone = self.layouts.pop(ids, None)
            self._refs.pop(ids, None)
            if gone is not None and self.current is gone:
                self.current = None
        self._refs[ids] = [weakref.ref(a, forget) for arrays in roles for a in arrays]
        self.layouts[ids] = current
        return current


class Trusted:
    """The layout a multi-tensor call may run on with no check of its arrays.

    Checking that a step's arrays are a known layout's (their ids, one by one) cost more
    than the loop on the small models: residual's 32 tensors (352 arrays), 17-24 us of a
    ~55 us call inside the step.  Where every array the call takes is a planned buffer
    (the same view, written by its call every run) or a variable its update writes over,
    a run that writes over the very same variables as the run that last checked (``last``:
    the bound program's ``LastState``, in place and with the same ids tuple) passes the
    same objects: the layout checked then (``layout``, for ``ids``) still holds.  Such a
    run also takes the numbers that are constants (Adam's betas and epsilon) or lie in a
    planned buffer (Adam's step size, which the flat loop reads out of a 1-element view of
    its buffer: ``held`` in ``multi_tensor_updates``) as they were then (``once``), and
    calls the machine code Numba chose then (``entry``).  A train
    loop's steps (updates into spares) still check.

    The update inside the step (first to last update call, median of 200 steps, three
    interleaved runs each, busy 2-core host, us): checked -> unchecked -> with the numbers
    and the machine code taken once: residual 64 49-52 -> 41-46 -> 38-46, residual 256
    54-70 -> 45-56 -> 42-46, mnist_small 64 8.2-10 -> 6.1-7.5 -> 5.2-6.8, mnist_small 256
    16-27 -> 11-24 -> 13-18, spiral 64 5.0-6.1 -> 3.8 -> 3.1.  What is left around the
    loop is Python touching objects the step's kernels evicted: with the loop replaced by
    a no-op the same span measures 10-15 us (residual, mnist_small at 256)."""

    def __init__(self, last: LastState, once: set[int]):
        self.last = last
        self.once = once                 # the numbers taken once (constant or held)
        self.ids: object = Trusted       # the ``LastState.ids`` the layout was checked for
        self.layout: tuple | None = None
        self.args: tuple = ()            # the kernel's arguments when it was checked
        self.entry: Callable | None = None
        self.runs = 0                    # runs with no checks (for tests, bench)

    def take(self, ids: tuple, layout: tuple, kernel: Callable, args: tuple) -> None:
        """The run over variables ``ids`` ran ``kernel`` on ``layout`` with ``args``:
        later runs over them may skip the checks and Numba's choice among its compiled
        versions (``jit.entry_point``: for these very argument types)."""
        self.ids, self.layout, self.args = ids, layout, args
        self.entry = jit.entry_point(kernel, args)


def _bind_call(units: Sequence[Unit], kernels: dict, shared: set, chunks,
               flats: dict, trusted: Trusted | None = None,
               held: frozenset = frozenset()) -> Callable:
    """The generated Python call that runs a flat kernel (``flats``: per ``from_out``, the
    ``FlatCall``) on the blocks of a layout of the step's arrays, or gathers the arrays into
    the tuple kernels' tuples (one line each, no loop: it runs every step).  ``trusted``:
    the arrays are checked once per ``LastState`` (see ``Trusted``); ``held``: the numbers
    the flat kernels take as 1-element arrays (a view of the buffer a step writes each
    into), so a trusted run reads no number out of an array."""
    where, at = [], 0               # per unit: the position of its first argument in run's
    for unit in units:
        where.append(at)
        at += len(unit.loop.args) + len(unit.targets)
    names = [f"a{k}" for k in range(at)]
    loop = units[0].loop
    every = range(len(units))

    def arg(u: int, i: int) -> str:
        return names[where[u] + i]

    def target(u: int, m: int) -> str:
        """The array member ``m`` of unit ``u`` writes."""
        return names[where[u] + len(units[u].loop.args) + loop.written.index(m)]

    def each(texts) -> str:
        return "(" + "".join(f"{text}, " for text in texts) + ")"

    def scalar(i: int) -> str:
        if i in shared:
            return f"{arg(0, i)}.reshape(-1)[0]"
        return each(f"{arg(u, i)}.reshape(-1)[0]" for u in every)

    def call(kernel: str, passed: list[int]) -> str:
        parts = [each(f"flat({arg(u, i)})" for u in every) if loop.kinds[i] == "full"
                 else scalar(i) for i in passed]
        parts += [each(f"{target(u, m)}.reshape(-1)" for u in every) for m in loop.written]
        return f"{kernel}({', '.join(parts)}, chunks)"

    def flat_parts(from_out: bool, numbers: dict | None = None) -> tuple[list, list[str]]:
        """(the arrays of each role, the flat kernel's arguments but the table: each role's
        block of the layout ``L`` and the numbers, ``numbers[i]`` the text of number
        ``i`` where given)."""
        passed = kernels[from_out][1]
        full = [i for i in passed if loop.kinds[i] == "full"]
        roles = ([[arg(u, i) for u in every] for i in full]
                 + [[target(u, m) for u in every] for m in loop.written])
        block = {i: f"L[{1 + r}]" for r, i in enumerate(full)}
        numbers = numbers or {}
        parts = [block[i] if i in block else numbers.get(i) or (
            f"{arg(0, i)}.reshape(1)" if i in held else scalar(i)) for i in passed]
        return roles, parts + [f"L[{1 + len(full) + r}]" for r in range(len(loop.written))]

    def flat_or_tuples(from_out: bool) -> list[str]:
        """Lines running the flat kernel on a layout of this step's arrays (every full
        argument and every output a block), else the tuple kernel."""
        roles, parts = flat_parts(from_out)
        passed = kernels[from_out][1]
        mode = "in_place" if from_out else "apart"
        lines = [f"ids = {each(f'id({name})' for role in roles for name in role)}",
                 f"L = {mode}_layout.current",
                 "if L is None or L[0] != ids:",
                 f"    L = {mode}_layout.find(ids, {each(each(role) for role in roles)})",
                 "if L is not None:",
                 f"    {mode}_flat({', '.join(parts)}, L[-1])",
                 f"    {mode}_layout.calls += 1"]
        if from_out and trusted is not None:
            taken = f"({', '.join(parts)}, L[-1])"
            lines += ["    if last.mode == IN_PLACE:",
                      f"        trusted.take(last.ids, L, in_place_flat, {taken})"]
        return [*lines, "else:", f"    {call(mode, passed)}"]

    def run_trusted() -> list[str]:
        """Lines running the in-place flat kernel on the trusted layout, then returning."""
        if trusted is None:
            return []
        passed = kernels[True][1]
        numbers = {i: f"N[{passed.index(i)}]" for i in trusted.once}
        parts = flat_parts(True, numbers)[1]
        every_taken = all(loop.kinds[i] == "full" or i in trusted.once for i in passed)
        call = ("trusted.entry(*N)" if every_taken
                else f"trusted.entry({', '.join(parts)}, L[-1])")
        return ["    if last.mode == IN_PLACE and trusted.ids is last.ids:",
                "        L, N = trusted.layout, trusted.args",
                f"        {call}",
                "        in_place_layout.calls += 1",
                "        trusted.runs += 1",
                f"        return {target(0, loop.written[0])}"]

    in_place = " and ".join(f"{target(u, m)} is {arg(u, i)}" for u, unit in enumerate(units)
                            for m, i in unit.loop.overwritten.items()) or "False"
    lines = [f"def run({', '.join(names)}):", *run_trusted(),
             f"    if {in_place}:",
             *["        " + line for line in flat_or_tuples(True)],
             "    else:",
             *["        " + line for line in flat_or_tuples(False)],
             f"    return {target(0, loop.written[0])}", ""]
    scope = {"in_place": kernels[True][0], "apart": kernels[False][0], "chunks": chunks,
             "in_place_flat": flats[True].kernel, "in_place_layout": flats[True],
             "apart_flat": flats[False].kernel, "apart_layout": flats[False],
             "flat": lambda x: np.ascontiguousarray(x).reshape(-1),
             "trusted": trusted, "last": trusted and trusted.last,
             "IN_PLACE": trusted and trusted.last.IN_PLACE}
    exec(compile("\n".join(lines), "<multi-tensor update call>", "exec"), scope)  # noqa: S102
    return scope["run"]
