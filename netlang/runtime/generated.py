"""Generated CPU kernels for fused groups and elementwise ops: one Numba loop nest each.

A fused group (ops/fused.py) on the NumPy plan (runtime/fused_plan.py) costs one pass over
memory per ufunc; here the whole group becomes ONE loop over the output's elements that
computes every step in registers.  The element code comes from each op record's ``expr``
facet, the C expression the CUDA generator uses too (runtime/gpu_kernels.py): a small
recursive-descent translator turns that C subset into a Python expression Numba compiles
(``c ? a : b`` -> ``(a if c else b)``, ``({T})x`` -> ``np.float32(x)``, ``exp`` ->
``math.exp``).  A single elementwise op with an ``expr`` gets the same treatment.

Layout: every input is full-size, a vector along the last axis (a per-channel bias, ``[C]``
or ``[1,..,1,C]``) or a single number; each is passed as a C-contiguous 2-D ``[rows, cols]``
view, a ``[C]`` vector (tiled in the kernel to a row's length) or a ``[1]`` array, and the
output as a ``[rows, cols]`` view with rows long enough to vectorise (``layout``).  Rows are
split over the threads (``prange``) from ``SERIAL_BELOW`` elements; below, one thread runs
them, since waking the pool costs more than the work.  Steps the output does not need are
left out, and so are the inputs only they read.  Anything else (an op without an ``expr``,
integer dtypes, another broadcast) makes the factory decline, and so does an element that
calls libm (``exp``, ``tanh``: see ``fast_on_cpu``): the NumPy plan runs, and it stays the
reference the tests compare with.

A variable's update and its optimizer slots' (Adam's m, v and parameter), each a group of its
own in the IR, are merged by the executor into one loop with several outputs
(``merged_updates``), so each array is read and written once per step; the loops of all the
parameters an optimizer updates alike run as one call (``runtime/multi_tensor.py``).
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from netlang.ir.types import DType, TensorType
from netlang.ops.fused import input_ref, step_ref, step_types
from netlang.ops.registry import all_ops, get_op
from netlang.runtime import jit
from netlang.runtime.cpu_kernels import CompileOwner, writes_out
from netlang.runtime.gpu_kernels import live_parts

# Below this many output elements a kernel runs on one thread.  A parallel loop costs waking
# the pool's worker, which libgomp keeps spinning between regions for ``threads.SPIN_COUNT``
# rounds: a step's kernels come back to back, so the worker is usually awake.  Median of
# 7 x 2000 calls, serial vs prange (relu_grad; Adam's [sqrt,add,div,mul,sub]):
#   quiet, passive:    64K 10.9/21.1 us, 22.9/33.8 us;  1M 175/188 us, 302/316 us;
#                      4M 1566/1502 us, 2148/2475 us
#   quiet, spinning workers (OMP_WAIT_POLICY unset): the prange wins from 64K, 1.9x at 1M.
# Whole steps (tools/bench_threads.py, spinning 10,000 rounds, ms at batch 64 / 256):
# one thread below 16M elements: residual 38.3 / 154, mnist 12.8 / 46.2; below 64K: 34.7 /
# 141, 11.7 / 44.5; below 32K and 256K within noise of 64K.
SERIAL_BELOW = 1 << 16

SQUARES = "squares"     # a kernel's sum of its output's squares (``kernel_source``)
# A kernel that also sums its output's columns does so in blocks of rows of about this many
# elements, each block into its own accumulator row, so two threads can share the blocks.
SUM_PART, MAX_SUM_PARTS = 1 << 15, 64

# The output is looped over as [rows, cols] with rows of at least MIN_COLS elements where the
# sizes allow (an inner loop of 4 channels is not vectorised: a [256,28,28,4] add took 442 us
# against NumPy's 104) and at least MIN_ROWS rows for the threads to share.
MIN_ROWS, MIN_COLS, MAX_ROWS = 16, 256, 1024

SCALAR_TYPES = {DType.f32: "np.float32", DType.f64: "np.float64", DType.bool: "bool"}
ARRAY_TYPES = {DType.f32: "np.float32", DType.f64: "np.float64", DType.bool: "np.bool_"}
C_TYPES = {"float": DType.f32, "double": DType.f64, "bool": DType.bool}
MATH = {"exp": "math.exp", "log": "math.log", "log1p": "math.log1p", "expm1": "math.expm1",
        "sqrt": "math.sqrt", "tanh": "math.tanh", "sin": "math.sin", "cos": "math.cos",
        "fabs": "abs", "floor": "np.floor", "ceil": "np.ceil", "rint": "np.rint",
        "erf": "math.erf"}
VECTOR_CALLS = {"sqrt", "fabs", "floor", "ceil", "rint"}   # instructions LLVM vectorises; the
NUMPY_LACKS = {"erf"}           # others call libm, and NumPy's vectorised ufuncs beat them, but
                                # NumPy has no erf (its reference is per element in Python)
PASSED = {"full": 2, "vector": 1, "scalar": 0}   # input kinds passed to a kernel: their ndim


class Untranslatable(Exception):
    """An ``expr`` outside the C subset this module translates (the factory declines)."""


# -- the C expression subset -> a tree ----------------------------------------------------

TOKEN = re.compile(r"\s*(?:(\{\w+\})|(\d+\.?\d*(?:[eE][-+]?\d+)?f?|\.\d+(?:[eE][-+]?\d+)?f?)"
                   r"|([A-Za-z_]\w*)|(\|\||&&|==|!=|<=|>=|[-+*/<>!?:(),]))")
BINARY_LEVELS = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"),
                 ("*", "/"))


def tokenize(text: str) -> list[str]:
    tokens, at = [], 0
    text = text.rstrip()
    while at < len(text):
        match = TOKEN.match(text, at)
        if match is None:
            raise Untranslatable(f"cannot read {text[at:]!r} in {text!r}")
        tokens.append(match.group(match.lastindex))
        at = match.end()
    return tokens


class CParser:
    """Recursive descent over C's precedence levels; nodes are tuples: ``("num", text)``,
    ``("ref", name)`` for a placeholder, ``("cast", type, x)``, ``("call", f, args)``,
    ``("unary", op, x)``, ``("binary", op, a, b)``, ``("cond", c, a, b)``."""

    def __init__(self, text: str):
        self.text, self.tokens, self.at = text, tokenize(text), 0

    def peek(self, ahead: int = 0) -> str | None:
        k = self.at + ahead
        return self.tokens[k] if k < len(self.tokens) else None

    def take(self, want: str | None = None) -> str:
        token = self.peek()
        if token is None or (want is not None and token != want):
            raise Untranslatable(f"expected {want or 'more'} in {self.text!r}, got {token}")
        self.at += 1
        return token

    def parse(self) -> tuple:
        tree = self.conditional()
        if self.peek() is not None:
            raise Untranslatable(f"unexpected {self.peek()!r} in {self.text!r}")
        return tree

    def conditional(self) -> tuple:
        test = self.binary(0)
        if self.peek() != "?":
            return test
        self.take("?")
        then = self.conditional()
        self.take(":")
        return ("cond", test, then, self.conditional())

    def binary(self, level: int) -> tuple:
        if level == len(BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in BINARY_LEVELS[level]:
            op = self.take()
            left = ("binary", op, left, self.binary(level + 1))
        return left

    def unary(self) -> tuple:
        if self.peek() in ("-", "!", "+"):
            op = self.take()
            return ("unary", op, self.unary())
        if self.peek() == "(" and self.peek(2) == ")" and self._is_type(self.peek(1)):
            self.take("(")
            ctype = self.take()
            self.take(")")
            return ("cast", ctype, self.unary())
        return self.primary()

    @staticmethod
    def _is_type(token: str | None) -> bool:
        return token == "{T}" or token in C_TYPES

    def primary(self) -> tuple:
        token = self.take()
        if token == "(":
            inner = self.conditional()
            self.take(")")
            return inner
        if token.startswith("{"):
            return ("ref", token[1:-1])
        if token[0].isdigit() or token[0] == ".":
            return ("num", token)
        if token[0].isalpha() or token[0] == "_":
            self.take("(")
            args = [self.conditional()]
            while self.peek() == ",":
                self.take(",")
                args.append(self.conditional())
            self.take(")")
            return ("call", token, tuple(args))
        raise Untranslatable(f"unexpected {token!r} in {self.text!r}")


@functools.cache
def parse_c(text: str) -> tuple:
    """The tree of one op's C expression (parsed once per op)."""
    return CParser(text).parse()


# -- a tree -> Python text Numba compiles -------------------------------------------------

def python_literal(value) -> str:
    """An attribute's value as Python text (a float stays a float64 constant, as C's
    ``0.1`` is a double)."""
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "math.nan"
    if math.isinf(value):
        return "math.inf" if value > 0 else "(-math.inf)"
    return repr(value)


def to_python(tree: tuple, operands: Sequence[str], dtype: DType, attrs: dict) -> str:
    """Python text for one element: ``operands`` name the op's inputs (``{0}``, ``{1}``),
    ``dtype`` is the step's (``{T}``), ``attrs`` the op's attributes (``{alpha}``)."""
    def emit(node: tuple) -> str:
        kind = node[0]
        if kind == "num":
            text = node[1]
            return f"np.float32({text[:-1]})" if text.endswith("f") else text
        if kind == "ref":
            return _reference(node[1], operands, attrs)
        if kind == "cast":
            target = dtype if node[1] == "{T}" else C_TYPES[node[1]]
            return f"{SCALAR_TYPES[target]}({emit(node[2])})"
        if kind == "call":
            return _call(node[1], [emit(a) for a in node[2]])
        if kind == "unary":
            return {"-": "(-{})", "+": "{}", "!": "(not {})"}[node[1]].format(emit(node[2]))
        if kind == "binary":
            op = {"||": "or", "&&": "and"}.get(node[1], node[1])
            return f"({emit(node[2])} {op} {emit(node[3])})"
        return f"({emit(node[2])} if {emit(node[1])} else {emit(node[3])})"
    return emit(tree)


def _reference(name: str, operands: Sequence[str], attrs: dict) -> str:
    if name.isdigit():
        if int(name) >= len(operands):
            raise Untranslatable(f"{{{name}}} but the op has {len(operands)} operands")
        return operands[int(name)]
    if name == "T":
        raise Untranslatable("{T} outside a cast")
    if attrs.get(name) is None:
        raise Untranslatable(f"the attribute {name!r} has no value")
    return python_literal(attrs[name])


def _call(name: str, args: list[str]) -> str:
    if name == "pow" and len(args) == 2:
        return f"({args[0]} ** {args[1]})"
    if name not in MATH or len(args) != 1:
        raise Untranslatable(f"no Python form for the C call {name}({', '.join(args)})")
    return f"{MATH[name]}({args[0]})"


# -- the kernel: one loop nest per group ----------------------------------------------------

def input_kind(shape: tuple, out_shape: tuple) -> str | None:
    """``full`` (the output's shape), ``vector`` (along the last axis), ``scalar`` (one
    number), or None: a broadcast this module does not generate."""
    if tuple(shape) == tuple(out_shape):
        return "full"
    if math.prod(shape) == 1:
        return "scalar"
    if shape and out_shape and shape[-1] == out_shape[-1] and math.prod(shape[:-1]) == 1:
        return "vector"
    return None


def layout(out_shape: tuple, kinds: Sequence[str]) -> tuple[int, int]:
    """The output as ``[rows, cols]`` (see ``MIN_COLS``).  With a per-channel vector a row is
    a whole number of channel rows (the kernel tiles the vector to the row's length);
    without, any split of the elements: the fewest rows from ``MIN_ROWS`` up that divide
    them, else one row."""
    size = math.prod(out_shape)
    channels = out_shape[-1] if out_shape else 1
    if "vector" in kinds:
        cols = channels
        while (cols and cols < MIN_COLS and size // cols % 2 == 0
               and size // cols // 2 >= MIN_ROWS):
            cols *= 2
        return (size // cols if cols else 0), cols
    if size < MIN_ROWS * MIN_COLS:
        return (1, size) if size else (0, channels)
    rows = next((r for r in range(MIN_ROWS, MAX_ROWS + 1) if size % r == 0), 1)
    return rows, size // rows


def kernel_source(expr: tuple, kinds: Sequence[str], in_dtypes: Sequence[DType],
                  parallel: bool, sums: Sequence[tuple[int, int] | str | None] = (),
                  store: bool = True) -> str:
    """The Python text of the group's kernel ``fused(x0, .., out)`` (see the module doc):
    its rows split over the threads (``prange``) when ``parallel``, else one loop.  An input
    of kind ``out`` is not passed: it is read from ``out`` (the update of a variable written
    over it), so no two of the loop's arrays overlap and LLVM still vectorises it.

    ``sums`` adds a float64 accumulator ``acc{k}`` ``[parts, cols]`` per entry, taken after
    ``out``, summing each column of the output (None), of its square (``SQUARES``: a batch
    variance's second moment, squared in float64) or of the output times ``x - mean``
    (``(x, mean)``: the indices of those inputs, a full one and a vector), in the output's
    dtype as batchnorm's gamma gradient computes it (``with_channel_sums``).  The rows are
    then cut into ``parts`` blocks, each summed into its own row of the accumulators (the
    threads take whole blocks), so the sums do not depend on the thread count.  With
    ``store`` false the loop takes the sums and leaves ``out`` as it was (only the sums read
    the output: ``with_channel_sums``)."""
    types = step_types(expr, [TensorType(d, ()) for d in in_dtypes])
    hoisted, body = [f"    acc{k}[:] = 0.0" for k in range(len(sums))], []
    element = {"full": "x{i}[r, j]", "vector": "v{i}[j]", "scalar": "x{i}", "out": "out[r, j]"}
    for i, kind in enumerate(kinds):
        if kind == "vector":        # tiled to the row's length, a whole number of channels
            hoisted += [f"    v{i} = np.empty(cols, {ARRAY_TYPES[in_dtypes[i]]})",
                        "    for j in range(cols):",
                        f"        v{i}[j] = x{i}[j % x{i}.shape[0]]"]
        if kind != "unused":
            body.append(f"            e{i} = {element[kind].format(i=i)}")
    body += element_steps(expr, types, [f"e{i}" for i in range(len(kinds))], "t", 12)
    value, scalar = f"t{len(expr) - 1}", SCALAR_TYPES[types[-1].dtype]
    if store or not sums:
        body.append(f"            out[r, j] = {value}")
    for k, centered in enumerate(sums):
        if centered is None:
            term = value
        elif centered == SQUARES:
            term = f"np.float64({value}) * np.float64({value})"
        else:
            term = f"{scalar}({value} * {scalar}(e{centered[0]} - e{centered[1]}))"
        body.append(f"            acc{k}[p, j] += {term}")
    args = "".join(f"x{i}, " for i, kind in enumerate(kinds) if kind in PASSED)
    accumulators = "".join(f", acc{k}" for k in range(len(sums)))
    loop = 'prange' if parallel else 'range'
    rows = [f"    for r in {loop}(rows):"] if not sums else [   # a block of rows per part
        "    parts = acc0.shape[0]", "    block = (rows + parts - 1) // parts",
        f"    for p in {loop}(parts):",
        "        for r in range(p * block, min(rows, (p + 1) * block)):"]
    indent = "" if not sums else "    "
    return "\n".join([
        "import math", "", "import numpy as np", "",
        "from netlang.runtime.jit import kernel, prange", "", "",
        f"@kernel(parallel={parallel})", f"def fused({args}out{accumulators}):",
        "    rows, cols = out.shape", *hoisted, *rows,
        *(indent + line for line in ["        for j in range(cols):", *body]), ""])


def element_steps(expr: tuple, types: Sequence[TensorType], operands: Sequence[str],
                  prefix: str, indent: int) -> list[str]:
    """The lines computing one element of the group's output, step ``j`` into local
    ``{prefix}{j}`` (the last step is the output), its inputs read from ``operands``."""
    env = {input_ref(i): name for i, name in enumerate(operands)}
    lines = []
    for j in live_parts(expr)[0]:
        (op, args, attrs), t = expr[j], types[j]
        tree = parse_c(get_op(op).expr)
        value = to_python(tree, [env[a] for a in args], t.dtype, dict(attrs))
        env[step_ref(j)] = f"{prefix}{j}"
        lines.append(f"{' ' * indent}{prefix}{j} = {SCALAR_TYPES[t.dtype]}({value})")
    return lines


def group_label(expr: tuple, shown: int = 6) -> str:
    """What the kernel file is named after: ``fused group: add, relu`` or the op alone."""
    ops = [op for op, _, _ in expr]
    if len(ops) == 1:
        return f"{ops[0]} kernel"
    more = f", ... ({len(ops)} ops)" if len(ops) > shown else ""
    return f"fused group: {', '.join(ops[:shown])}{more}"


def generated_kernel(expr: tuple, shapes: Sequence[tuple], dtypes: Sequence,
                     parallel: bool | None = None) -> Callable | None:
    """``run(*arrays, out=None)`` computing ``expr`` in one generated loop nest, compiled now;
    None when the group is not one this module generates (see the module doc).  ``parallel``
    None: split the rows over the threads from ``SERIAL_BELOW`` output elements on."""
    if not all(get_op(op).expr for op, _, _ in expr):
        return None
    try:
        in_dtypes = [DType.of(d) for d in dtypes]
        types = step_types(expr, [TensorType(d, tuple(s)) for d, s in zip(in_dtypes, shapes)])
    except ValueError:          # a dtype the IR does not have
        return None
    if any(d not in SCALAR_TYPES for d in [*in_dtypes, *(t.dtype for t in types)]):
        return None
    out_shape, out_dtype = tuple(types[-1].shape), types[-1].dtype
    read = live_parts(expr)[1]
    kinds = [input_kind(tuple(s), out_shape) if i in read else "unused"
             for i, s in enumerate(shapes)]
    if None in kinds:
        return None
    if parallel is None:
        parallel = math.prod(out_shape) >= SERIAL_BELOW
    owner = CompileOwner()      # compiled once the program is bound, if still called
    try:
        fn = compiled_kernel(expr, kinds, in_dtypes, out_dtype, parallel, owner=owner)
    except Untranslatable:
        return None

    def in_place(i: int, owner: CompileOwner):
        """The kernel that reads input ``i`` from ``out``."""
        return compiled_kernel(expr, [*kinds[:i], "out", *kinds[i + 1:]], in_dtypes,
                               out_dtype, parallel, owner=owner)
    return bind_arrays(fn, in_place, owner, kinds, [d.numpy for d in in_dtypes],
                       layout(out_shape, kinds), out_shape, out_dtype.numpy,
                       Group(expr, tuple(kinds), tuple(in_dtypes), out_shape, out_dtype))


def compiled_kernel(expr: tuple, kinds: Sequence[str], in_dtypes: Sequence[DType],
                    out_dtype: DType, parallel: bool, sums: Sequence = (), owner=None,
                    store: bool = True):
    """The kernel of ``kernel_source``, compiled (or loaded from the cache) now, or, given the
    ``owner`` its run keeps, once the program is bound (``jit.compile_now``)."""
    source = kernel_source(expr, kinds, in_dtypes, parallel, sums, store)
    label = group_label(expr) + (f" + {len(sums)} sum(s)" if sums else "") + (
        "" if store else ", not stored")
    fn = jit.compile_source(source, "fused", label)
    jit.compile_now(fn, [(d.numpy, PASSED[k]) for d, k in zip(in_dtypes, kinds) if k in PASSED]
                    + [(out_dtype.numpy, 2)] + [(np.dtype(np.float64), 2)] * len(sums),
                    owner)
    return fn


@dataclass(frozen=True)
class Group:
    """What a generated run computes, kept on it (``run.group``) so that the executor can
    merge the in-place updates of one variable's slots into one loop (``merged_updates``)."""

    expr: tuple
    kinds: tuple[str, ...]
    in_dtypes: tuple[DType, ...]
    out_shape: tuple
    out_dtype: DType


def bind_arrays(fn, in_place: Callable, owner, kinds, dtypes, grid: tuple[int, int],
                out_shape: tuple, out_dtype, group: Group) -> Callable:
    """The call the executor makes: the output allocated, or the caller's C-contiguous
    ``out``, written through its ``[rows, cols]`` view.  It is generated too (one line per
    input, no loop), as a step's small kernels cost what their Python calls cost: inputs
    become C-contiguous views (a copy only when one is not), single numbers NumPy scalars
    (so an input is an array or a NumPy scalar, as every kernel's result is).

    ``run.overwriting(i)``, for a variable's update written over the variable, is the same
    call that, given input ``i`` itself as ``out``, runs ``in_place(i)``: the kernel reading
    that input from ``out`` (each element is read before it is written).  Through two
    overlapping arrays the loop is not vectorised: Adam's [sqrt,add,div,mul,sub] over
    [1024,1024] f32 takes 2.5 ms written over its parameter that way, 0.29 ms this way.

    Each run keeps the ``CompileOwner`` its kernel was compiled for (``run.compile_owner``;
    ``owner`` for this one): while a program is bound, a kernel compiles only if a run that
    survived the binding still keeps it (``cpu_kernels.compiles_after_binding``)."""
    scope = {"fn": fn, "empty": np.empty, "contiguous": np.ascontiguousarray, "grid": grid,
             "channels": out_shape[-1:], "out_shape": out_shape, "out_dtype": out_dtype,
             "NOT_C_CONTIGUOUS": "a generated kernel writes only into a C-contiguous out="}
    views = {"full": "contiguous({x}).reshape(grid)",
             "vector": "contiguous({x}).reshape(channels)", "scalar": "{x}.reshape(-1)[0]"}
    names = [f"x{i}" for i in range(len(kinds))]

    def call(kernel: str, skip: int | None = None) -> str:
        args = [views[k].format(x=n) for i, (n, k) in enumerate(zip(names, kinds))
                if k in PASSED and i != skip]
        return f"{kernel}({''.join(a + ', ' for a in args)}out.reshape(grid))"

    def make(over: int | None) -> Callable:
        lines = [f"def run({''.join(n + ', ' for n in names)}out=None):",
                 "    if out is None:", "        out = empty(out_shape, out_dtype)",
                 "    elif not out.flags.c_contiguous:",
                 "        raise ValueError(NOT_C_CONTIGUOUS)"]
        token = None
        if over is not None:
            token = CompileOwner()
            scope["over"] = in_place(over, token)
            lines += [f"    elif out is x{over}:", f"        {call('over', over)}",
                      "        return out"]
        lines += [f"    {call('fn')}", "    return out", ""]
        exec(compile("\n".join(lines), "<generated kernel call>", "exec"), scope)  # noqa: S102
        made = writes_out(scope.pop("run"))
        # A variant offers no further variant: the cache holding it is then no reference
        # cycle, and a variant no pass uses is freed (its kernel never compiled).
        made.overwriting = overwriting if over is None else None
        made.group, made.compile_owner = group, token
        return made

    @functools.cache
    def overwriting(i: int) -> Callable | None:
        same = 0 <= i < len(kinds) and kinds[i] == "full" and dtypes[i] == out_dtype
        return make(i) if same else None
    made = make(None)
    made.compile_owner = owner      # set here: no closure of ``make`` may keep it alive
    return made


# -- in-place updates merged: one loop for a variable and its optimizer slots -----------------

def mergeable(run: Callable, shape: tuple, dtype) -> bool:
    """Whether ``run`` is a generated group over ``shape``/``dtype`` whose inputs are all
    full-size or single numbers (what ``merged_updates`` loops over)."""
    group = getattr(run, "group", None)
    return (group is not None and group.out_shape == tuple(shape)
            and group.out_dtype.numpy == np.dtype(dtype)
            and set(group.kinds) <= {"full", "scalar", "unused"})


@dataclass(frozen=True)
class UpdateLoop:
    """A run of in-place updates of one shape as one loop's element code, not yet compiled
    (``update_loop``): ``merged_updates`` compiles it for one variable and its slots,
    ``runtime/multi_tensor.py`` for the updates of many variables at once.

    ``args``: the argument ids it reads, each once (``kinds``: full or scalar, ``dtypes``);
    ``overwritten``: member -> the index in ``args`` of the variable it writes over;
    ``operands``: per member, per input, an index into ``args`` or a local's name;
    ``written``: the members whose results are stored (``out{m}``), in order; the others
    (a weight's decayed gradient, read by its slots' updates alone) stay in registers."""

    args: tuple
    kinds: tuple[str, ...]
    dtypes: tuple[DType, ...]
    overwritten: dict
    groups: tuple[Group, ...]
    operands: tuple
    written: tuple[int, ...]

    @property
    def out_dtype(self) -> np.dtype:
        return self.groups[0].out_dtype.numpy

    @property
    def size(self) -> int:
        return math.prod(self.groups[0].out_shape)

    def element(self, from_out: bool) -> tuple[list[int], list[str], list[str]]:
        """(the indices of the ``args`` passed to the kernel as ``x{i}``, the lines run once
        at indent 4, the lines computing element ``k`` at indent 8), the arrays written
        being ``out{m}``.  ``from_out``: every overwritten variable is read from its output
        array (not passed), as when every member writes over the variable it updates."""
        read = {i: f"o{m}" for m, i in self.overwritten.items()} if from_out else {}
        # every old value is read before anything is written (a member may read another's)
        body = [f"        o{m} = out{m}[k]" for m in self.overwritten if from_out]
        for m, group in enumerate(self.groups):
            names = [read.get(x, f"e{x}") if isinstance(x, int) else x
                     for x in self.operands[m]]
            types = step_types(group.expr, [TensorType(d, ()) for d in group.in_dtypes])
            body += element_steps(group.expr, types, names, f"t{m}_", 8)
        passed = [i for i in range(len(self.args)) if i not in read]
        reads = [f"        e{i} = x{i}[k]" for i in passed if self.kinds[i] == "full"]
        scalars = [f"    e{i} = x{i}" for i in passed if self.kinds[i] == "scalar"]
        writes = [f"        out{m}[k] = t{m}_{len(self.groups[m].expr) - 1}"
                  for m in self.written]
        return passed, scalars, [*reads, *body, *writes]

    def key(self) -> tuple:
        """Equal for two loops that compute the same thing element by element (the same
        text over arguments of the same kinds and dtypes): their sizes may differ."""
        passed, scalars, lines = self.element(True)
        return ("\n".join(scalars + lines), self.written, str(self.out_dtype),
                tuple((self.kinds[i], self.dtypes[i]) for i in passed))

    def label(self) -> str:
        return "updates: " + "; ".join(group_label(g.expr).split(": ")[-1]
                                       for g in self.groups)


def update_loop(members: Sequence[tuple[Callable, tuple, int | None]],
                outs: Sequence[int], written: Sequence[int] | None = None) -> UpdateLoop:
    """The ``UpdateLoop`` of ``members`` (see ``merged_updates``); ``written``: the members
    whose results are stored (None: all)."""
    groups = [run.group for run, _, _ in members]
    produced = {out: m for m, out in enumerate(outs)}
    args: list[int] = []
    kinds: list[str] = []
    dtypes: list[DType] = []
    operands: list[tuple] = []
    for m, ((_, member_args, over), group) in enumerate(zip(members, groups)):
        mine = []
        for i, (arg, kind) in enumerate(zip(member_args, group.kinds)):
            if arg in produced and produced[arg] < m:
                mine.append(f"t{produced[arg]}_{len(groups[produced[arg]].expr) - 1}")
            elif kind == "unused":
                mine.append("None")
            else:
                if arg not in args:
                    args.append(arg)
                    kinds.append(kind)
                    dtypes.append(group.in_dtypes[i])
                mine.append(args.index(arg))
        operands.append(tuple(mine))
    overwritten = {m: args.index(member_args[over])
                   for m, (_, member_args, over) in enumerate(members) if over is not None}
    written = tuple(range(len(members)) if written is None else written)
    return UpdateLoop(tuple(args), tuple(kinds), tuple(dtypes), overwritten, tuple(groups),
                      tuple(operands), written)


def merged_updates(members: Sequence[tuple[Callable, tuple, int | None]],
                   outs: Sequence[int], written: Sequence[int] | None = None
                   ) -> tuple[Callable, tuple]:
    """One loop for a run of in-place updates of the same shape (Adam's m, v and parameter:
    7 memory passes per element instead of 10), each member written into its own array.

    ``members``: (its generated run, its argument ids, the position of the argument its
    output overwrites, or None); ``outs``: each member's output id, which a later member may
    read; ``written``: the members whose results are stored (None: all).  Returns ``(run,
    args)``: ``run(*arrays)`` takes the values of ``args`` (the members' arguments, each
    once, but for the outputs of earlier members) and then the arrays the ``written``
    members write, in order, and returns the first of them (``run.in_registers``: how many
    members' results are not stored).  Element by element
    each member computes what it did alone, in the same order: the results are bit for bit
    the same.  When every member writes over the variable it updates, the loop reads each
    from its output array (two overlapping arrays would keep LLVM from vectorising it, as
    ``bind_arrays`` says); else (an update written into a spare) from the variable's own."""
    loop = update_loop(members, outs, written)
    kinds, dtypes, out_dtype, written = loop.kinds, loop.dtypes, loop.out_dtype, loop.written

    def compiled(from_out: bool) -> Callable:
        passed, scalars, lines = loop.element(from_out)
        parallel = loop.size >= SERIAL_BELOW
        names = [f"x{i}" for i in passed] + [f"out{m}" for m in written]
        source = "\n".join([
            "import math", "", "import numpy as np", "",
            "from netlang.runtime.jit import kernel, prange", "", "",
            f"@kernel(parallel={parallel})", f"def updates({', '.join(names)}):", *scalars,
            f"    for k in {'prange' if parallel else 'range'}(out{written[0]}.shape[0]):",
            *lines, ""])
        return jit.compile_source(source, "updates", loop.label()[:60]), passed

    (in_place, kept), (apart, _) = compiled(True), compiled(False)
    flat = [(lambda x: np.ascontiguousarray(x).reshape(-1)) if k == "full"
            else (lambda x: x.reshape(-1)[0]) for k in kinds]
    n_in = len(loop.args)
    pairs = [(written.index(m), i) for m, i in loop.overwritten.items()]

    def run(*arrays):
        outs = arrays[n_in:]
        targets = [o.reshape(-1) for o in outs]
        if all(outs[m] is arrays[i] for m, i in pairs):
            in_place(*[flat[i](arrays[i]) for i in kept], *targets)
        else:
            apart(*[view(x) for view, x in zip(flat, arrays)], *targets)
        return outs[0]
    run.in_registers = len(loop.groups) - len(written)
    # the other loop compiles on its first call, if ever (as in multi_tensor_updates)
    jit.compile_now(in_place, [(dtypes[i].numpy, int(kinds[i] == "full")) for i in kept]
                    + [(out_dtype, 1)] * len(written), owner=run)
    return run, loop.args


# -- sums over the leading axes, taken in the loop that writes the output ------------------

def sum_parts(rows: int, cols: int) -> int:
    """How many blocks of rows a kernel with sums cuts its ``[rows, cols]`` output into: one
    per ``SUM_PART`` elements (at most ``MAX_SUM_PARTS``), fixed by the shape."""
    return max(1, min(rows, MAX_SUM_PARTS, rows * cols // SUM_PART))


def with_channel_sums(run: Callable, sums: Sequence[str], store: bool = True) -> Callable | None:
    """``run`` (a generated group over ``[..., C]``) as one loop that also sums over every axis
    but the last, once per entry of ``sums``: the output itself (``"sum"``), its square
    (``"squares"``: with the sum, a batch variance's moments) or the output times
    ``x - mean`` (``"centered"``: batchnorm's gamma gradient; ``x`` the output's shape,
    ``mean`` ``[C]``).  Those sums read the output from registers instead of memory, where
    a ``sum``, ``mean``, ``sum_to_like``, ``batch_variance`` or ``batchnorm_grad_gamma``
    after the group would read it back (one pass over the image each;
    ``channel_sums.fuse_channel_sums``).

    Returns ``sums_run(*inputs, *extras, out=None)``, ``extras`` an ``(x, mean)`` pair per
    centered sum in order, that writes the output as ``run`` does and leaves the float64
    ``[C]`` sums in ``sums_run.totals``; or None for a group it does not take (empty, not
    float).  With ``store`` false it writes nothing to ``out``: for an output that nothing
    but these sums reads (a batchnorm's relu gradient whose other user recomputes it,
    passes/relu_mask.py), one pass over the image fewer.  Each column is summed in float64, in blocks of rows whose bounds come from the
    shape alone (``sum_parts``), the blocks' sums then added in order: the same bits on one
    thread or two.  The reference sums in the output's dtype, so the two differ by its
    rounding."""
    group: Group | None = getattr(run, "group", None)
    size = math.prod(group.out_shape) if group is not None and group.out_shape else 0
    if not size or group.out_dtype not in (DType.f32, DType.f64):
        return None
    kinds, dtypes, entries = list(group.kinds), list(group.in_dtypes), []
    for how in sums:
        if how == "centered":
            entries.append((len(kinds), len(kinds) + 1))
            kinds += ["full", "vector"]
            dtypes += [group.out_dtype, group.out_dtype]
        else:
            entries.append(SQUARES if how == "squares" else None)
    sums, owner = entries, CompileOwner()   # compiled once the program is bound, if kept
    try:
        fn = compiled_kernel(group.expr, kinds, dtypes, group.out_dtype,
                             size >= SERIAL_BELOW, sums, owner, store)
    except Untranslatable:
        return None
    channels = group.out_shape[-1]
    grid = layout(group.out_shape, ["vector"])        # rows of whole channel tiles
    accumulators = [np.zeros((sum_parts(*grid), grid[1]), np.float64) for _ in sums]
    totals = [np.empty(channels, np.float64) for _ in sums]
    views = {"full": lambda x: np.ascontiguousarray(x).reshape(grid),
             "vector": lambda x: np.ascontiguousarray(x).reshape(channels),
             "scalar": lambda x: x.reshape(-1)[0]}
    passed = [(i, views[k]) for i, k in enumerate(kinds) if k in PASSED]
    shape, dtype = group.out_shape, group.out_dtype.numpy

    def sums_run(*arrays, out=None):
        if out is None:
            out = np.empty(shape, dtype)
        fn(*[view(arrays[i]) for i, view in passed], out.reshape(grid), *accumulators)
        for acc, total in zip(accumulators, totals):
            fold_parts(acc, channels, total)
        sums_run.totals = totals
        return out
    sums_run.totals, sums_run.compile_owner = [], owner
    jit.compile_now(fold_parts, [(np.float64, 2), channels, (np.float64, 1)], owner=owner)
    return writes_out(sums_run)


@jit.kernel(parallel=False)
def fold_parts(acc, channels, total):
    """``total[c]``: the sum of ``acc``'s columns ``c``, ``c + channels``, ... (its channel
    tiles), each column summed over the rows (the blocks of rows) in order, then the tiles
    in order, from 0.0: what ``acc.sum(axis=0).reshape(-1, channels).sum(axis=0)`` gives,
    in an order fixed by the shape alone, as one compiled call instead of two NumPy
    reductions (4 us a call less on spiral's [64, 64])."""
    for c in range(channels):
        total[c] = 0.0
    for t in range(acc.shape[1] // channels):
        for c in range(channels):
            column = 0.0
            for p in range(acc.shape[0]):
                column += acc[p, t * channels + c]
            total[c] += column


# -- the factories ----------------------------------------------------------------------------

def libm_calls(expr: tuple) -> set[str]:
    """The C calls in the group's element code that Numba makes as one libm call per element
    (``exp``, ``tanh``, ...): every call but ``sqrt`` and ``fabs``, which are instructions."""
    def calls(node: tuple) -> set[str]:
        found = {node[1]} if node[0] == "call" and node[1] not in VECTOR_CALLS else set()
        return found.union(*map(calls, subtrees(node)))
    return set().union(*(calls(parse_c(get_op(op).expr)) for op, _, _ in expr
                         if get_op(op).expr))


def subtrees(node: tuple) -> list[tuple]:
    """The nodes right under ``node`` of a ``parse_c`` tree (a call's arguments too)."""
    below = [part for part in node[1:] if isinstance(part, tuple)]
    return [n for part in below for n in ((part,) if isinstance(part[0], str) else part)]


def fast_on_cpu(expr: tuple) -> bool:
    """Whether the generated loop beats the NumPy plan: not when an element calls libm.
    NumPy's own exp, log and tanh are vectorised; one libm call per element is 5x (exp) to
    40x (tanh) slower on [64,1024] f32, more than the memory passes a group saves; but a
    call NumPy has no ufunc for (erf) is far slower in the NumPy plan."""
    try:
        calls = libm_calls(expr)
    except Untranslatable:
        return False
    return not calls or bool(calls & NUMPY_LACKS)


# Numba's compile time grows with the loop body: a group of 800 steps (a 200-line chain)
# took 1 s to compile cold, for a kernel that runs once; such groups keep the NumPy plan.
MAX_STEPS = 64


def fused(shapes, dtypes, attrs, _state) -> Callable | None:
    """The CPU backend's factory for ``fused`` nodes (ahead of the NumPy plan)."""
    expr = attrs["expr"]
    if len(expr) > MAX_STEPS or not fast_on_cpu(expr):
        return None
    return generated_kernel(expr, shapes, dtypes)


def single_op(name: str) -> Callable:
    """A factory running one elementwise op as a group of one step."""
    def make(shapes, dtypes, attrs, _state) -> Callable | None:
        step = (name, tuple(input_ref(i) for i in range(len(shapes))),
                tuple(sorted(attrs.items())))
        return generated_kernel((step,), shapes, dtypes)
    make.__name__ = f"generated_{name}"
    return make


def generated_factories() -> dict[str, tuple]:
    """op name -> factories of generated kernels: ``fused``, and every op with an ``expr``
    that is ``fast_on_cpu``."""
    table: dict[str, tuple] = {"fused": (fused,)}
    for name, opdef in all_ops().items():
        if opdef.expr is not None and fast_on_cpu(((name, (), ()),)):
            table[name] = (single_op(name),)
    return table
