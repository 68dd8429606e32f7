"""A thin ctypes binding of oneDNN's C API (v3.2): the only module that loads ``libdnnl``.

What the CPU kernels need and nothing more: one CPU engine and stream, memory descriptors
from shapes and strides (so NHWC images, ``[kh,kw,cin,cout]`` filters and transposed
matrices are described as they lie in NumPy, with no copy), memories over NumPy buffers,
primitive descriptors, primitives with optional reorders to the layout an implementation
prefers, and execute.
Every C status becomes a ``OneDNNError``.

The library is looked for beside this interpreter (the ``onednn-cpu-gomp`` wheel puts it in
``<prefix>/lib``), then under the other site prefixes, then by the loader's own search.  When
it does not load (another OS or CPU, libgomp missing) ``available()`` is False and
``unavailable_reason()`` says why in one line; nothing here raises at import.

Enum values and argument ids are copied from oneDNN v3.2's ``include/oneapi/dnnl/dnnl.h``,
``dnnl_types.h`` and ``dnnl_common_types.h`` (tag v3.2), not recalled.
"""
from __future__ import annotations

import ctypes
import os
import site
import sys
import sysconfig
from collections.abc import Iterable

import numpy as np

from netlang.errors import ExecutionError

# -- constants from the v3.2 headers ----------------------------------------------------------

STATUS = {0: "success", 1: "out_of_memory", 2: "invalid_arguments", 3: "unimplemented",
          4: "last_impl_reached", 5: "runtime_error", 6: "not_required"}  # dnnl_status_t
UNIMPLEMENTED = 3
LAST_IMPL_REACHED = 4                   # dnnl_primitive_desc_next_impl: no more to try
F32 = 3                                  # dnnl_data_type_t dnnl_f32
FORMAT_ANY = 1                           # dnnl_format_tag_any
CPU = 1                                  # dnnl_engine_kind_t dnnl_cpu
STREAM_DEFAULT_FLAGS = 1                 # dnnl_stream_in_order
FORWARD_TRAINING, FORWARD_INFERENCE = 64, 96      # dnnl_prop_kind_t
BACKWARD, BACKWARD_DATA, BACKWARD_WEIGHTS = 128, 160, 192
CONVOLUTION_DIRECT = 0x1                 # dnnl_alg_kind_t
ELTWISE_RELU = 0x20
POOLING_MAX = 0x1FF
POOLING_AVG_INCLUDE_PADDING = 0x2FF
POOLING_AVG_EXCLUDE_PADDING = 0x3FF
USE_GLOBAL_STATS, USE_SCALE, USE_SHIFT = 0x1, 0x2, 0x4   # dnnl_normalization_flags_t
QUERY_IMPL_INFO_STR = 8                  # dnnl_query_t
QUERY_WORKSPACE_MD = 135
QUERY_EXEC_ARG_MD = 255
MAX_NDIMS = 12                           # DNNL_MAX_NDIMS
MEMORY_ALLOCATE = ctypes.c_void_p(2 ** (8 * ctypes.sizeof(ctypes.c_void_p)) - 1)  # (void*)-1

ARG_SRC, ARG_DST = 1, 17                 # DNNL_ARG_*
ARG_WEIGHTS, ARG_BIAS = 33, 41
ARG_MEAN, ARG_VARIANCE, ARG_SCALE, ARG_SHIFT = 49, 50, 51, 52
ARG_WORKSPACE = 64
ARG_DIFF_SRC, ARG_DIFF_DST, ARG_DIFF_WEIGHTS, ARG_DIFF_BIAS = 129, 145, 161, 169
ARG_DIFF_SCALE, ARG_DIFF_SHIFT = 255, 256
ARG_FROM, ARG_TO = ARG_SRC, ARG_DST      # reorder

Dims = ctypes.c_int64 * MAX_NDIMS
Handle = ctypes.c_void_p


class ExecArg(ctypes.Structure):
    """dnnl_exec_arg_t."""

    _fields_ = [("arg", ctypes.c_int), ("memory", Handle)]


class Version(ctypes.Structure):
    """dnnl_version_t."""

    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


class OneDNNError(ExecutionError):
    """A oneDNN call returned a status other than success."""

    def __init__(self, call: str, status: int):
        self.call, self.status = call, status
        super().__init__(f"oneDNN {call} failed: {STATUS.get(status, f'status {status}')}")


# -- loading -----------------------------------------------------------------------------------

# (argument types, result type) of every C function used; all return dnnl_status_t unless given.
SIGNATURES = {
    "dnnl_version": ([], ctypes.POINTER(Version)),
    "dnnl_engine_create": ([ctypes.POINTER(Handle), ctypes.c_int, ctypes.c_size_t], None),
    "dnnl_engine_destroy": ([Handle], None),
    "dnnl_stream_create": ([ctypes.POINTER(Handle), Handle, ctypes.c_uint], None),
    "dnnl_stream_wait": ([Handle], None),
    "dnnl_stream_destroy": ([Handle], None),
    "dnnl_memory_desc_create_with_strides": (
        [ctypes.POINTER(Handle), ctypes.c_int, Dims, ctypes.c_int, Dims], None),
    "dnnl_memory_desc_create_with_tag": (
        [ctypes.POINTER(Handle), ctypes.c_int, Dims, ctypes.c_int, ctypes.c_int], None),
    "dnnl_memory_desc_destroy": ([Handle], None),
    "dnnl_memory_desc_get_size": ([Handle], ctypes.c_size_t),
    "dnnl_memory_desc_equal": ([Handle, Handle], ctypes.c_int),
    "dnnl_memory_create": ([ctypes.POINTER(Handle), Handle, Handle, Handle], None),
    "dnnl_memory_set_data_handle": ([Handle, Handle], None),
    "dnnl_memory_destroy": ([Handle], None),
    "dnnl_primitive_attr_create": ([ctypes.POINTER(Handle)], None),
    "dnnl_primitive_attr_destroy": ([Handle], None),
    "dnnl_primitive_attr_set_post_ops": ([Handle, Handle], None),
    "dnnl_post_ops_create": ([ctypes.POINTER(Handle)], None),
    "dnnl_post_ops_append_eltwise": ([Handle, ctypes.c_int, ctypes.c_float, ctypes.c_float],
                                     None),
    "dnnl_post_ops_destroy": ([Handle], None),
    "dnnl_convolution_forward_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, ctypes.c_int, ctypes.c_int, Handle, Handle, Handle,
         Handle, Dims, Dims, Dims, Dims, Handle], None),
    "dnnl_convolution_backward_data_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, ctypes.c_int, Handle, Handle, Handle, Dims, Dims,
         Dims, Dims, Handle, Handle], None),
    "dnnl_convolution_backward_weights_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, ctypes.c_int, Handle, Handle, Handle, Handle, Dims,
         Dims, Dims, Dims, Handle, Handle], None),
    "dnnl_pooling_forward_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, ctypes.c_int, ctypes.c_int, Handle, Handle, Dims,
         Dims, Dims, Dims, Dims, Handle], None),
    "dnnl_pooling_backward_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, ctypes.c_int, Handle, Handle, Dims, Dims, Dims, Dims,
         Dims, Handle, Handle], None),
    "dnnl_batch_normalization_forward_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, ctypes.c_int, Handle, Handle, ctypes.c_float,
         ctypes.c_uint, Handle], None),
    "dnnl_batch_normalization_backward_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, ctypes.c_int, Handle, Handle, Handle, ctypes.c_float,
         ctypes.c_uint, Handle, Handle], None),
    "dnnl_matmul_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, Handle, Handle, Handle, Handle, Handle], None),
    "dnnl_reorder_primitive_desc_create": (
        [ctypes.POINTER(Handle), Handle, Handle, Handle, Handle, Handle], None),
    "dnnl_primitive_desc_query_md": ([Handle, ctypes.c_int, ctypes.c_int], Handle),
    "dnnl_primitive_desc_query": ([Handle, ctypes.c_int, ctypes.c_int, Handle], None),
    "dnnl_primitive_desc_next_impl": ([Handle], None),
    "dnnl_primitive_desc_destroy": ([Handle], None),
    "dnnl_primitive_create": ([ctypes.POINTER(Handle), Handle], None),
    "dnnl_primitive_execute": ([Handle, Handle, ctypes.c_int, ctypes.POINTER(ExecArg)], None),
    "dnnl_primitive_destroy": ([Handle], None),
}


def library_candidates() -> list[str]:
    """Where to look for libdnnl.so.3, most specific first; the last entry is the bare name."""
    prefixes = [sys.prefix, sys.base_prefix, sysconfig.get_config_var("LIBDIR") or ""]
    try:
        prefixes += [os.path.dirname(os.path.dirname(os.path.dirname(p)))
                     for p in site.getsitepackages()]   # <prefix>/lib/pythonX.Y/site-packages
    except AttributeError:                               # some virtualenvs lack it
        pass
    paths = []
    for prefix in prefixes:
        for where in (prefix, os.path.join(prefix, "lib")):
            path = os.path.join(where, "libdnnl.so.3")
            if prefix and path not in paths and os.path.exists(path):
                paths.append(path)
    return paths + ["libdnnl.so.3"]


def open_library(candidates: Iterable[str]) -> tuple[ctypes.CDLL | None, str]:
    """(library with typed functions, "") or (None, why not) after trying each candidate."""
    errors = []
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            for name, (args, res) in SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, (ctypes.c_int if res is None else res)
            version = lib.dnnl_version().contents
            if version.major != 3:
                raise OSError(f"{path} is oneDNN {version.major}.{version.minor}, need 3.x")
            return lib, ""
        except (OSError, AttributeError) as err:
            errors.append(str(err).splitlines()[0] if str(err) else type(err).__name__)
    return None, "oneDNN not loaded: " + "; ".join(errors)


class Library:
    """The loaded library (or why not), the CPU engine and one in-order stream, made on first
    use: importing this module never loads anything."""

    def __init__(self, candidates=library_candidates):
        self.candidates = candidates
        self.lib: ctypes.CDLL | None = None
        self.reason = ""
        self.engine = self.stream = None
        self.tried = False

    def load(self) -> ctypes.CDLL | None:
        if not self.tried:
            self.tried = True
            if sys.platform != "linux":
                self.reason = f"oneDNN not loaded: the wheel is Linux-only, this is {sys.platform}"
            else:
                self.lib, self.reason = open_library(self.candidates())
            if self.lib is not None:
                try:
                    self.engine, self.stream = self.make_engine()
                except OneDNNError as err:
                    self.lib, self.reason = None, f"oneDNN not usable: {err}"
        return self.lib

    def make_engine(self):
        engine, stream = Handle(), Handle()
        check(self.lib, "dnnl_engine_create", ctypes.byref(engine), CPU, 0)
        check(self.lib, "dnnl_stream_create", ctypes.byref(stream), engine,
              STREAM_DEFAULT_FLAGS)
        return engine, stream

    def version(self) -> str:
        if self.load() is None:
            return ""
        v = self.lib.dnnl_version().contents
        return f"{v.major}.{v.minor}.{v.patch}"


LIBRARY = Library()


def available() -> bool:
    """True when libdnnl loaded and a CPU engine exists."""
    return LIBRARY.load() is not None


def unavailable_reason() -> str:
    """One line saying why oneDNN is not used ("" when it is)."""
    LIBRARY.load()
    return LIBRARY.reason


def check(lib, name: str, *args) -> None:
    status = getattr(lib, name)(*args)
    if status != 0:
        raise OneDNNError(name, status)


def call(name: str, *args) -> None:
    check(LIBRARY.lib, name, *args)


def dims(values: Iterable[int]) -> Dims:
    out = Dims()
    for i, v in enumerate(values):
        out[i] = v
    return out


# -- memory descriptors and memories --------------------------------------------------------------

class MemoryDesc:
    """An owned ``dnnl_memory_desc_t``: f32 with logical ``dims`` and element ``strides``, or
    the format chosen by the implementation (``strides=None``: format_tag_any)."""

    def __init__(self, shape: tuple[int, ...], strides: tuple[int, ...] | None):
        self.handle = Handle()
        if strides is None:
            call("dnnl_memory_desc_create_with_tag", ctypes.byref(self.handle), len(shape),
                 dims(shape), F32, FORMAT_ANY)
        else:
            call("dnnl_memory_desc_create_with_strides", ctypes.byref(self.handle), len(shape),
                 dims(shape), F32, dims(strides))
        self.shape = tuple(shape)

    def __del__(self):
        if self.handle and getattr(LIBRARY, "lib", None) is not None:   # None at exit
            LIBRARY.lib.dnnl_memory_desc_destroy(self.handle)


def strided_md(logical: tuple[int, ...], array_shape: tuple[int, ...],
               order: tuple[int, ...]) -> MemoryDesc:
    """The md of a C-contiguous array of ``array_shape`` seen with oneDNN's ``logical`` dims:
    logical dim i is array axis ``order[i]`` (NHWC image: order (0, 3, 1, 2))."""
    elem = [1] * len(array_shape)
    for axis in range(len(array_shape) - 2, -1, -1):
        elem[axis] = elem[axis + 1] * array_shape[axis + 1]
    return MemoryDesc(logical, tuple(elem[a] for a in order))


def nhwc(shape: tuple[int, int, int, int]) -> MemoryDesc:
    """An NHWC NumPy image as oneDNN's (N, C, H, W)."""
    n, h, w, c = shape
    return strided_md((n, c, h, w), shape, (0, 3, 1, 2))


def hwio(shape: tuple[int, int, int, int]) -> MemoryDesc:
    """A ``[kh, kw, cin, cout]`` filter as oneDNN's (O, I, KH, KW) weights."""
    kh, kw, cin, cout = shape
    return strided_md((cout, cin, kh, kw), shape, (3, 2, 0, 1))


def any_md(logical: tuple[int, ...]) -> MemoryDesc:
    return MemoryDesc(logical, None)


class Memory:
    """A ``dnnl_memory_t`` over a NumPy buffer (handle set per call) or, when ``own``, over
    memory oneDNN allocates (a reorder's target, a workspace)."""

    def __init__(self, md_handle, own: bool = False):
        self.handle = Handle()
        call("dnnl_memory_create", ctypes.byref(self.handle), md_handle, LIBRARY.engine,
             MEMORY_ALLOCATE if own else Handle(0))

    def point_at(self, array: np.ndarray) -> None:
        call("dnnl_memory_set_data_handle", self.handle, Handle(array.ctypes.data))

    def __del__(self):
        if self.handle and getattr(LIBRARY, "lib", None) is not None:   # None at exit
            LIBRARY.lib.dnnl_memory_destroy(self.handle)


# -- primitive descriptors, attributes, primitives ------------------------------------------------

class PrimitiveDesc:
    """An owned ``dnnl_primitive_desc_t``; ``create`` returns None when oneDNN has no
    implementation for the case (status unimplemented)."""

    def __init__(self, handle: Handle, keep=()):
        # keep: what the C object points into, alive as long as it.  A backward pd keeps a
        # raw pointer to its forward hint (``hint_fwd_pd_`` in oneDNN's *_pd.hpp), so the
        # hint is kept here, not freed when the factory returns.
        self.handle, self.keep = handle, keep

    @classmethod
    def create(cls, fn: str, *args, keep=()) -> PrimitiveDesc | None:
        handle = Handle()
        status = getattr(LIBRARY.lib, fn)(ctypes.byref(handle), *args)
        if status == UNIMPLEMENTED:
            return None
        if status != 0:
            raise OneDNNError(fn, status)
        return cls(handle, keep)

    def arg_md(self, arg: int):
        """The md the implementation wants for execute argument ``arg`` (None if unused)."""
        md = LIBRARY.lib.dnnl_primitive_desc_query_md(self.handle, QUERY_EXEC_ARG_MD, arg)
        if not md or LIBRARY.lib.dnnl_memory_desc_get_size(md) == 0:
            return None
        return md

    def next_impl(self) -> bool:
        """Move to oneDNN's next implementation for the same case, in its order of
        preference (in place); False when there is none (the handle is then unchanged)."""
        status = LIBRARY.lib.dnnl_primitive_desc_next_impl(self.handle)
        if status == LAST_IMPL_REACHED:
            return False
        if status != 0:
            raise OneDNNError("dnnl_primitive_desc_next_impl", status)
        return True

    def impl(self) -> str:
        """The implementation's name, e.g. ``brg:avx512_core`` or ``gemm:jit``."""
        out = ctypes.c_char_p()
        call("dnnl_primitive_desc_query", self.handle, QUERY_IMPL_INFO_STR, 0,
             ctypes.byref(out))
        return out.value.decode()

    def __del__(self):
        if self.handle and getattr(LIBRARY, "lib", None) is not None:   # None at exit
            LIBRARY.lib.dnnl_primitive_desc_destroy(self.handle)


class Attr:
    """An owned ``dnnl_primitive_attr_t``, optionally with a relu post-op."""

    def __init__(self, relu: bool = False):
        self.handle = Handle()
        call("dnnl_primitive_attr_create", ctypes.byref(self.handle))
        if relu:
            ops = Handle()
            call("dnnl_post_ops_create", ctypes.byref(ops))
            try:
                call("dnnl_post_ops_append_eltwise", ops, ELTWISE_RELU, 0.0, 0.0)
                call("dnnl_primitive_attr_set_post_ops", self.handle, ops)
            finally:
                LIBRARY.lib.dnnl_post_ops_destroy(ops)

    def __del__(self):
        if self.handle and getattr(LIBRARY, "lib", None) is not None:   # None at exit
            LIBRARY.lib.dnnl_primitive_attr_destroy(self.handle)


class Primitive:
    """An owned ``dnnl_primitive_t`` and its execute-argument table.

    ``bind(arg, memory)`` fixes which memory goes with each argument once; ``run()`` then
    executes with no Python-side allocation (the caller points the memories at its arrays).
    """

    def __init__(self, pd: PrimitiveDesc):
        self.pd, self.handle = pd, Handle()
        call("dnnl_primitive_create", ctypes.byref(self.handle), pd.handle)
        self.bound: dict[int, Memory] = {}
        self.args = (ExecArg * 0)()

    def bind(self, arg: int, memory: Memory) -> None:
        self.bound[arg] = memory
        self.args = (ExecArg * len(self.bound))(*(ExecArg(a, m.handle)
                                                  for a, m in self.bound.items()))

    def run(self) -> None:
        call("dnnl_primitive_execute", self.handle, LIBRARY.stream, len(self.args), self.args)
        call("dnnl_stream_wait", LIBRARY.stream)

    def __del__(self):
        if self.handle and getattr(LIBRARY, "lib", None) is not None:   # None at exit
            LIBRARY.lib.dnnl_primitive_destroy(self.handle)


def reorder(src_md, dst_md) -> Primitive:
    """A reorder primitive between two layouts of the same tensor."""
    pd = PrimitiveDesc.create("dnnl_reorder_primitive_desc_create", src_md, LIBRARY.engine,
                              dst_md, LIBRARY.engine, None)
    if pd is None:
        raise OneDNNError("dnnl_reorder_primitive_desc_create", UNIMPLEMENTED)
    return Primitive(pd)


def same_md(a, b) -> bool:
    return bool(LIBRARY.lib.dnnl_memory_desc_equal(a, b))


class Step:
    """One primitive over NumPy arrays in their own layouts.

    ``user`` maps each execute argument the caller supplies to the md of its array, and
    ``outputs`` names those the primitive writes.  Where the implementation prefers another
    layout (blocked weights, say) the argument goes through a oneDNN-owned buffer and a
    reorder runs before (inputs) or after (outputs) the primitive.  ``shared`` binds memories
    that no array backs and another Step also uses (a pooling workspace).
    """

    def __init__(self, pd: PrimitiveDesc, user: dict[int, MemoryDesc],
                 outputs: Iterable[int] = (), shared: dict[int, Memory] | None = None):
        self.pd, self.primitive = pd, Primitive(pd)
        self.user: dict[int, Memory] = {}
        self.before: list[Primitive] = []
        self.after: list[Primitive] = []
        outputs = set(outputs)
        for arg, md in user.items():
            mem = self.user[arg] = Memory(md.handle)
            want = pd.arg_md(arg)
            if want is None or same_md(want, md.handle):
                self.primitive.bind(arg, mem)
                continue
            inner = Memory(want, own=True)
            self.primitive.bind(arg, inner)
            step = reorder(want, md.handle) if arg in outputs else reorder(md.handle, want)
            step.bind(ARG_FROM, inner if arg in outputs else mem)
            step.bind(ARG_TO, mem if arg in outputs else inner)
            (self.after if arg in outputs else self.before).append(step)
        for arg, mem in (shared or {}).items():
            self.primitive.bind(arg, mem)

    def __call__(self, arrays: dict[int, np.ndarray]) -> None:
        """Run on C-contiguous float32 arrays (one per user argument; outputs are written)."""
        for arg, array in arrays.items():
            self.user[arg].point_at(array)
        for step in self.before:
            step.run()
        self.primitive.run()
        for step in self.after:
            step.run()

    def impl(self) -> str:
        return self.pd.impl()


def owned_memory(pd: PrimitiveDesc, arg: int) -> Memory | None:
    """A oneDNN-allocated memory for ``arg`` as ``pd`` wants it (None when it needs none)."""
    md = pd.arg_md(arg)
    return None if md is None else Memory(md, own=True)
