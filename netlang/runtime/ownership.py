"""Whose array is it?  When a kernel may write over a variable's array, and the one block of
memory that holds a CPU state's variables side by side.

An update writes over its variable's array only when nobody but the state can see that
memory: the state's dict holds the array and nothing else does (``sole_holder``: its
reference count), and no other array shares its memory (``fits``).  NumPy makes the second
a property of the array's ``base``: a view of an array holds that array (a reference the
count sees), unless the array is itself a view, whose views hold the array it views.  So an
array that owns its memory qualifies, and so does one whose memory belongs to a
``VariableArena``: NumPy stops at a base that is not an array, so every view of such an
array holds the array itself, and its reference count sees them as it does for an owner.

``VariableArena`` (an anonymous private ``mmap``: page aligned, zero filled, not an array)
holds a CPU state's float variables one after another (``arena_arrays``), each on a
cache-line boundary; so does each generation of spares the executor's updates write into
when the state's arrays are held elsewhere (``executor.Spares``: a train loop's copy of the
state before each step).  The optimizer's update of many parameters then reads and writes
one block per role (parameters and slots here, gradients in the step's buffer plan) with
one table of offsets (``runtime/multi_tensor.py``) instead of a tuple of arrays gathered
every step.
"""
from __future__ import annotations

import mmap
import operator
import sys
from collections.abc import Sequence

import numpy as np

from netlang.runtime.memory import aligned


def _references(container, key) -> int:
    return sys.getrefcount(container[key])


# The count ``_references`` gives for an object that only its container holds (NumPy's own
# temporary elision tests the same thing: a reference count that nobody else can add to).
_ALONE = _references({0: object()}, 0)


def _alone_in_tuple() -> int:
    container = {0: object(), 1: object()}      # alive while counted, as a state's dict is
    return next(map(sys.getrefcount, operator.itemgetter(0, 1)(container)))


# The count ``map(sys.getrefcount, values)`` gives for each object of the tuple ``values``
# that its container (a dict or a list) holds and nothing else: how ``executor.run_edges``
# tests many arrays at once, in one C-level pass.
ALONE_IN_TUPLE = _alone_in_tuple()


def sole_holder(container, key) -> bool:
    """Whether ``container[key]`` is held by the container and nothing else: no user holds
    it, no view of it exists (a view holds its base)."""
    return _references(container, key) == _ALONE


class VariableArena(mmap.mmap):
    """The memory of a state's variables, side by side (see the module doc)."""


# Private, as memory from malloc is: a process forked later writes its own copy of a page
# (an anonymous mmap is shared with forked children by default).
_PRIVATE = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}


def fits(array, shape: tuple, dtype: np.dtype) -> bool:
    """Whether a kernel may write ``array`` whole: a NumPy array whose C-contiguous,
    aligned, writeable memory is its own (owned, or its place in a ``VariableArena``), of
    this shape and dtype."""
    if type(array) is not np.ndarray or array.shape != shape:
        return False
    mine = array.dtype
    if mine is not dtype and mine != dtype:
        return False
    flags = array.flags         # carray: C-contiguous, aligned and writeable (460 -> 240 ns)
    return flags.carray and (flags.owndata or type(array.base) is VariableArena)


def in_arena(array) -> bool:
    """Whether ``array`` is a variable's place in a ``VariableArena``."""
    return type(array) is np.ndarray and type(array.base) is VariableArena


def arena_dtype(dtype) -> bool:
    """Whether a variable of this dtype goes in a ``VariableArena``: NumPy's floats of 4
    bytes or more (the optimizer's generated kernels update those; bf16 stays apart)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" and dtype.itemsize >= 4


def arena_arrays(types: Sequence[tuple[tuple, np.dtype]]) -> list[np.ndarray]:
    """Zero-filled arrays of these ``(shape, dtype)``s, one after another in one new
    ``VariableArena``, each starting on a cache line (``memory.aligned``)."""
    offsets, end = [], 0
    for shape, dtype in types:
        offsets.append(end)
        end += aligned(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    arena = VariableArena(-1, max(end, 1), **_PRIVATE)
    return [np.ndarray(shape, dtype, buffer=arena, offset=offset)
            for (shape, dtype), offset in zip(types, offsets)]
