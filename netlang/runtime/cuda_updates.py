"""A training step's updates of every parameter and optimizer slot as ONE CUDA kernel launch.

On the GPU each fused update group (a parameter's new value, each optimizer slot's) is one
generated ``ElementwiseKernel`` launch (gpu_kernels.py): Adam on a net of P parameters makes
3P launches, each paid for in Python and in the driver.  ``merge_gpu_updates`` (run by the
executor at the end of binding, GPU backend only) folds them into one multi-tensor launch:

* the members are the calls computing a variable's new value as elementwise code (fused
  groups, plain arithmetic ops such as Adam's ``beta1_power * beta1``), plus the groups only
  they read (weight decay's ``g + decay * p``, read by Adam's m and v);
* members linked by a value of their shape (Adam's m, v and parameter) form one *tensor*:
  one thread computes them one after the other for one element, each member's arithmetic
  being its group's own generated expression (``gpu_kernels.cuda_source``), so every result
  is bit for bit the unmerged kernel's (a value passed between members goes through
  ``netlang_opaque``, an empty ``asm`` on the device, so nvcc cannot contract across members
  the multiply-add that memory kept apart);
* tensors whose members have the same expressions share one ``case`` of the kernel's switch
  (a *variant*: with weight decay, the kernels and the biases);
* a device table holds one row per tensor: its variant, then the addresses of the arrays it
  reads and writes; ``starts`` (int64, cumulative element counts, made once per bound
  program) gives each tensor its range of the flat index, and each thread finds its tensor
  by binary search over it.

No optimizer needs a second pass: a member reads other members' values only at its own
element (Adam's parameter reads the new m and v), which its thread has just computed; what
mixes elements or tensors (Adam's bias-corrected step size, a 0-d group every parameter
reads) is not an update and runs before, as its own kernel.

The launch runs where the last member ran; the other members become calls that hand on the
array it wrote (so the number of calls, and ``Executor.kernel_calls``, stay the same).  The
members between were moved after the launch, and only members whose values nothing else
reads before it are taken, so the step computes what it did.  The outputs go into arrays of
an earlier run that nobody holds any more (the state has moved on), else new ones.  The
table's addresses are checked on the host per run and the table is refilled
(``netlang_fill_table``, a small kernel taking the addresses as arguments: no host-to-device
copy, so it can be captured) only for an address set not seen before; tables are kept per
address set (outputs alternate between two sets and the memory pool hands the gradients the
same few blocks), so a steady run makes the one launch.  While a stream is being captured
into a CUDA graph (capture.py) the fill is always recorded too, into a table kept for the
graph's lifetime: replays refill it with the capture's addresses, which capture.py keeps
fixed, then launch the update.

This module never imports CuPy: it gets it as ``xp``.
"""
from __future__ import annotations

import functools
import hashlib
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from netlang.ir.graph import device_of
from netlang.ir.types import DType
from netlang.runtime import gpu_kernels
from netlang.runtime.gpu_kernels import CTYPE, RawSource, can_generate, cuda_source, launch

OUT_TYPES = (DType.f32, DType.f64)          # what a member may compute (netlang_opaque's)
IN_TYPES = (DType.f32, DType.f64, DType.bool, DType.i32, DType.i64)   # what it may read
FILL_ARGS = 128     # addresses one fill launch writes (1 KB of the 4 KB of kernel arguments)
KEEP_TABLES = 8     # address sets remembered per bound program (the pool reuses a few)
KEEP_OUTPUTS = 3    # output sets kept for reuse (the state holds one, a loop's copy another)

PRELUDE = """\
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float netlang_opaque(float x) {
    float y; asm("mov.b32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ double netlang_opaque(double x) {
    double y; asm("mov.b64 %0, %1;" : "=d"(y) : "d"(x)); return y; }
#else
static inline float netlang_opaque(float x) { return x; }
static inline double netlang_opaque(double x) { return x; }
#endif
"""

FILL = RawSource("netlang_fill_table", (
    "NETLANG_KERNEL netlang_fill_table(unsigned long long* __restrict__ table, long long start, "
    "long long count, "
    + ", ".join(f"unsigned long long a{i}" for i in range(FILL_ARGS)) + ") {\n"
    "    const unsigned long long values[] = {"
    + ", ".join(f"a{i}" for i in range(FILL_ARGS)) + "};\n"
    "    NETLANG_LOOP(i, count) { table[start + i] = values[i]; }\n}\n"))



@dataclass(frozen=True)
class Member:
    """One call taken into the launch: its position among the calls, its output id, its
    element expression, its arguments with their shapes and dtypes, its output's."""

    position: int
    out: int
    expr: tuple
    args: tuple[int, ...]
    in_shapes: tuple[tuple, ...]
    in_dtypes: tuple[DType, ...]
    shape: tuple
    dtype: DType


@dataclass
class Tensor:
    """Members over one shape that one thread computes in order for each element: one row
    of the table.  ``reads`` are the ids it loads (``kinds``: ``full``, or ``scalar`` for a
    single number), ``writes`` the members whose values leave the launch."""

    members: list[Member]
    reads: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    read_dtypes: list[DType] = field(default_factory=list)
    writes: list[Member] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(np.prod(self.members[0].shape, dtype=np.int64))

    def signature(self) -> tuple:
        """What its code depends on: tensors with equal signatures share a variant."""
        index = {m.out: k for k, m in enumerate(self.members)}
        steps = tuple((m.expr, m.in_dtypes, m.dtype,
                       tuple(("m", index[a]) if a in index else ("r", self.reads.index(a))
                             for a in m.args)) for m in self.members)
        return (steps, tuple(self.kinds), tuple(self.read_dtypes),
                tuple(index[m.out] for m in self.writes))


# -- which calls: the members -------------------------------------------------------------------

ARITHMETIC = re.compile(r"[A-Za-z_]\w*\s*\(")     # a C call (exp, sqrt): CuPy's may round apart


def member_of(program, bound, position: int, backend, dims: dict) -> Member | None:
    """The call at ``position`` as a member, if the launch computes it exactly as its own
    kernel does: a fused group the CUDA generator writes (the same generated expression) or
    one plain-arithmetic op in one dtype (the same IEEE operation as CuPy's ufunc), run by
    the backend's default kernel, whose inputs are the output's shape or single numbers."""
    call = program.calls[position]
    run = bound.calls[position][1]
    if (call.random or device_of(call.node, backend.name) != backend.name
            or not isinstance(run, functools.partial)
            or run.func is not backend.kernel_for(call.opdef)):
        return None
    if call.opdef.name == "fused":
        expr = call.attrs["expr"]
        if not can_generate(expr):
            return None
    elif call.opdef.expr is not None and not ARITHMETIC.search(call.opdef.expr):
        expr = ((call.opdef.name, tuple(f"x{i}" for i in range(len(call.args))),
                 tuple(sorted(call.attrs.items()))),)
    else:
        return None
    types = [program.graph.nodes[a].type for a in (*call.args, call.out)]
    try:
        shapes = [tuple(t.concrete(dims)) for t in types]
    except KeyError:
        return None
    dtypes = [t.dtype for t in types]
    *in_shapes, shape = shapes
    *in_dtypes, dtype = dtypes
    if (dtype not in OUT_TYPES or any(d not in IN_TYPES for d in in_dtypes) or 0 in shape
            or any(s != shape and int(np.prod(s)) != 1 for s in in_shapes)):
        return None
    if call.opdef.name != "fused" and any(d != dtype for d in in_dtypes):
        return None        # C's promotions are not NumPy's: one dtype throughout
    return Member(position, call.out, expr, tuple(call.args), tuple(in_shapes),
                  tuple(in_dtypes), shape, dtype)


def choose_members(program, bound, backend, dims: dict) -> list[Member]:
    """The members, in call order: every update computed by a call ``member_of`` takes, and
    each such call that only members of its shape read (weight decay's ``g + decay * p``),
    less those ``trim`` drops."""
    found = {}
    for position in range(len(program.calls)):
        member = member_of(program, bound, position, backend, dims)
        if member is not None:
            found[member.out] = member
    readers: dict[int, list[int]] = {}
    for position, call in enumerate(program.calls):
        for a in call.args:
            readers.setdefault(a, []).append(position)
    updates, fetched = set(program.updates.values()), set(program.fetches)
    chosen, more = set(), {out for out in found if out in updates}
    while more:
        chosen |= more
        more = {out for out, m in found.items()
                if out not in chosen and out not in fetched and readers.get(out)
                and all(program.calls[p].out in chosen
                        and found[program.calls[p].out].shape == m.shape
                        for p in readers[out])}
    chosen = trim(program, found, chosen, readers, updates)
    return sorted((found[o] for o in chosen), key=lambda m: m.position)


def trim(program, found: dict, chosen: set, readers: dict, updates: set) -> set:
    """``chosen`` less, until none is left to drop, any member whose value a call outside
    reads before the launch (which runs at the last member's place), any intermediate read
    outside, and any that reads a member of another shape (another thread computes it)."""
    while True:
        last = max((found[o].position for o in chosen), default=-1)
        drop = set()
        for out in chosen:
            outside = [p for p in readers.get(out, []) if program.calls[p].out not in chosen]
            if (out not in updates and (outside or not readers.get(out))
                    or any(p <= last for p in outside)
                    or any(a in chosen and found[a].shape != found[out].shape
                           for a in found[out].args)):
                drop.add(out)
        if not drop:
            return chosen
        chosen = chosen - drop


def tensors_of(members: list[Member], leaving: set[int]) -> list[Tensor]:
    """The members grouped into tensors (linked by the values they pass on), each with what
    it loads and which members' values it writes (those in ``leaving``)."""
    by_out = {m.out: m for m in members}
    root = {m.out: m.out for m in members}

    def find(x: int) -> int:
        while root[x] != x:
            x = root[x]
        return x
    for m in members:
        for a in m.args:
            if a in by_out:
                root[find(a)] = find(m.out)
    groups: dict[int, Tensor] = {}
    for m in members:
        groups.setdefault(find(m.out), Tensor([])).members.append(m)
    for tensor in groups.values():
        for m in tensor.members:
            for a, s, d in zip(m.args, m.in_shapes, m.in_dtypes):
                if a not in by_out and a not in tensor.reads:
                    tensor.reads.append(a)
                    tensor.kinds.append("scalar" if int(np.prod(s)) == 1 else "full")
                    tensor.read_dtypes.append(d)
            if m.out in leaving:
                tensor.writes.append(m)
    return list(groups.values())


# -- the kernel ---------------------------------------------------------------------------------

def variant_code(tensor: Tensor) -> list[str]:
    """The body of one ``case``: load what the tensor reads (row[1..]), compute each member
    with its group's generated expression in a block of its own, store what leaves."""
    lines = []
    for j, (kind, dtype) in enumerate(zip(tensor.kinds, tensor.read_dtypes)):
        ctype = CTYPE[dtype]
        lines.append(f"const {ctype} r{j} = ((const {ctype}*)row[{1 + j}])"
                     f"[{'k' if kind == 'full' else '0'}];")
    index = {m.out: k for k, m in enumerate(tensor.members)}
    for k, m in enumerate(tensor.members):
        source = cuda_source(m.expr, list(m.in_dtypes))
        _, live = gpu_kernels.live_parts(m.expr)
        ctype = CTYPE[m.dtype]
        loads = []
        for i in live:
            a = m.args[i]
            value = (f"netlang_opaque(m{index[a]})" if a in index
                     else f"r{tensor.reads.index(a)}")
            loads.append(f"const {CTYPE[m.in_dtypes[i]]} x{i} = {value};")
        lines += [f"{ctype} m{k};", "{", *loads, f"{ctype} y;", *source.operation.split("\n"),
                  f"m{k} = y;", "}"]
    first = 1 + len(tensor.reads)
    for w, m in enumerate(tensor.writes):
        ctype = CTYPE[m.dtype]
        lines.append(f"(({ctype}*)row[{first + w}])[k] = m{index[m.out]};")
    return lines


def kernel_source(variants: list[Tensor], width: int) -> RawSource:
    """The multi-tensor kernel: each index finds its tensor by binary search over
    ``starts`` (``starts[t] <= i < starts[t + 1]``), then runs its row's variant."""
    cases = []
    for v, tensor in enumerate(variants):
        cases += [f"        case {v}: {{", *("            " + line for line in
                                             variant_code(tensor)), "            break; }"]
    body = "\n".join([
        "NETLANG_KERNEL {name}(const unsigned long long* __restrict__ table,",
        "                      const long long* __restrict__ starts, long long tensors,",
        "                      long long total) {",
        "    NETLANG_LOOP(i, total) {",
        "        long long lo = 0, hi = tensors - 1;",
        "        while (lo < hi) {",
        "            const long long mid = (lo + hi + 1) / 2;",
        "            if (starts[mid] <= i) lo = mid; else hi = mid - 1;",
        "        }",
        "        const long long k = i - starts[lo];",
        f"        const unsigned long long* row = table + lo * {width};",
        "        switch ((int)row[0]) {", *cases, "        }", "    }", "}", ""])
    name = "netlang_updates_" + hashlib.sha1(body.encode()).hexdigest()[:12]
    return RawSource(name, PRELUDE + body.replace("{name}", name, 1))


def address(array) -> int:
    """The device address of an array's first element (CuPy's ``data.ptr``; NumPy's for the
    tests' stand-in)."""
    pointer = getattr(array.data, "ptr", None)
    return int(pointer) if pointer is not None else array.__array_interface__["data"][0]


def _references(arrays: list, i: int) -> int:
    return sys.getrefcount(arrays[i])


_ALONE = _references([object()], 0)


def alone(arrays: list, i: int) -> bool:
    """Whether ``arrays[i]`` is held by the list and nothing else (no state, no view)."""
    return _references(arrays, i) == _ALONE


def capturing(xp) -> bool:
    """Whether the current stream is being captured into a CUDA graph."""
    stream = xp.cuda.get_current_stream()
    is_capturing = getattr(stream, "is_capturing", None)
    return bool(is_capturing()) if is_capturing is not None else False


class MultiTensorUpdate:
    """The launch, made once per bound program (its kernel, ``starts`` and the row layout):
    ``run(*arrays)`` (the values of ``args``) takes arrays for the outputs
    (``spare_outputs``), finds or fills the table for these addresses, launches once and
    returns every written member's value; ``value(out)`` hands on one (None for an
    intermediate, which stays in the thread)."""

    def __init__(self, xp, tensors: list[Tensor]):
        self.xp = xp
        signatures = list(dict.fromkeys(t.signature() for t in tensors))
        variants = [next(t for t in tensors if t.signature() == s) for s in signatures]
        self.width = 1 + max(len(t.reads) + len(t.writes) for t in tensors)
        self.kernel = gpu_kernels.raw_kernel(xp, kernel_source(variants, self.width))
        self.fill = gpu_kernels.raw_kernel(xp, FILL)
        self.args = list(dict.fromkeys(a for t in tensors for a in t.reads))
        self.kinds = {a: kind for t in tensors for a, kind in zip(t.reads, t.kinds)}
        self.outputs = [(m.out, m.shape, m.dtype.numpy) for t in tensors for m in t.writes]
        slot = {a: j for j, a in enumerate(self.args)}
        slot.update({out: len(self.args) + k for k, (out, _, _) in enumerate(self.outputs)})
        self.rows = [(signatures.index(t.signature()), [slot[a] for a in t.reads]
                      + [slot[m.out] for m in t.writes]) for t in tensors]
        sizes = [t.size for t in tensors]
        self.total = int(sum(sizes))
        self.starts = xp.asarray(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        self.tables: dict[tuple, object] = {}
        self.captured: list = []     # tables a captured graph refills and reads, kept
        self.values: dict[int, object] = {}
        self.kept: list[list] = []   # output sets of earlier runs, newest first
        self.launches = 0

    def run(self, *arrays):
        xp, self.values = self.xp, {}       # (the last run's: handed on already)
        arrays = [a if self.kinds[arg] == "scalar" or a.flags.c_contiguous
                  else xp.ascontiguousarray(a) for arg, a in zip(self.args, arrays)]
        outs = self.spare_outputs()
        addresses = tuple(address(a) for a in (*arrays, *outs))
        table = self.table(addresses)
        launch(self.kernel, self.total, (table, self.starts, np.int64(len(self.rows)),
                                         np.int64(self.total)))
        self.launches += 1
        self.values = {out: array for (out, _, _), array in zip(self.outputs, outs)}
        return self.values

    def spare_outputs(self) -> list:
        """Arrays to write this run's values into: a set of an earlier run that nobody else
        holds any more (the state has moved on to a later one), else new ones; so a
        steady run writes to the same few addresses and finds its table kept."""
        for kept in self.kept:
            if all(alone(kept, i) for i in range(len(kept))):
                return kept
        made = [self.xp.empty(shape, dtype) for _, shape, dtype in self.outputs]
        self.kept = [made, *self.kept[:KEEP_OUTPUTS - 1]]
        return made

    def value(self, out: int):
        return self.values.get(out)

    def table(self, addresses: tuple):
        """The device table for these addresses: kept from an earlier run, else filled now
        (always while capturing: the graph then refills it, see the module doc)."""
        if capturing(self.xp):
            table = self.xp.empty(len(self.rows) * self.width, np.uint64)
            self.captured.append(table)
        else:
            table = self.tables.get(addresses)
            if table is not None:
                return table
            if len(self.tables) >= KEEP_TABLES:
                del self.tables[next(iter(self.tables))]
            table = self.tables[addresses] = self.xp.empty(len(self.rows) * self.width,
                                                           np.uint64)
        flat = []
        for variant, slots in self.rows:
            row = [variant, *(addresses[s] for s in slots)]
            flat += row + [0] * (self.width - len(row))
        for start in range(0, len(flat), FILL_ARGS):
            chunk = flat[start:start + FILL_ARGS]
            values = [np.uint64(v) for v in chunk + [0] * (FILL_ARGS - len(chunk))]
            launch(self.fill, len(chunk), (table, np.int64(start), np.int64(len(chunk)),
                                           *values))
        return table


# -- the calls rewritten ------------------------------------------------------------------------

def merge_gpu_updates(program, bound, backend, dims: dict) -> MultiTensorUpdate | None:
    """Replace ``bound``'s update calls by one launch (see the module doc): at the last
    member's place the launch, then each member's call handing on its value, in their
    order; the calls between keep theirs, and what each call frees is worked out again
    for the new order.  None (nothing changed) where fewer than two calls would merge."""
    members = choose_members(program, bound, backend, dims)
    if len(members) < 2:
        return None
    taken = {m.out for m in members}
    leaving = set(program.updates.values()) | set(program.fetches) | {
        a for c in program.calls if c.out not in taken for a in c.args}
    merged = MultiTensorUpdate(backend.xp, tensors_of(members, leaving & taken))
    first = members[0]

    def launch_all(*arrays):
        return merged.run(*arrays).get(first.out)
    launch_all.merged = merged
    by_position = {m.position: m for m in members}
    calls = []
    for position, call in enumerate(bound.calls):
        if position in by_position and position != members[-1].position:
            continue
        if position == members[-1].position:
            calls.append((first.out, launch_all, tuple(merged.args), ()))
            calls += [(m.out, functools.partial(merged.value, m.out), (), ())
                      for m in members[1:]]
        else:
            calls.append(call)
    bound.calls[:] = with_frees(calls, {d: out for out, _, _, dead in bound.calls for d in dead})
    bound.step = None
    return merged


def with_frees(calls: list[tuple], freed_by: dict) -> list[tuple]:
    """``calls`` (reordered) with each value of ``freed_by`` (value -> the output of the call
    that freed it) dropped where that call now is, or after its last reader if that is now
    later (a member's argument, read by the launch)."""
    at = {}
    for position, (out, _, args, _) in enumerate(calls):
        at[out] = position
        for a in args:
            at[a] = max(at.get(a, position), position)
    dead: dict[int, list] = {}
    for value, by in freed_by.items():
        position = max(at[by], at.get(value, -1))
        dead.setdefault(position, []).append(value)
    return [(out, run, args, tuple(dead.get(p, ())))
            for p, (out, run, args, _) in enumerate(calls)]
