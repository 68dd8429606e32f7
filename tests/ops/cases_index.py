"""Property cases for ops/index.py: gather with repeated and negative indices, top_k with
distinct values, tile and expand."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.ops.harness import array, distinct, op_case, shape


def _indices(draw, n: int, rank: int) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    s = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    return rng.integers(-n, n, s).astype(draw(st.sampled_from([np.int32, np.int64])))


@op_case("gather")
def gather_values(draw):
    s = shape(draw, min_rank=1)
    axis = draw(st.integers(-len(s), len(s) - 1))
    return [array(draw, s), _indices(draw, s[axis], draw(st.integers(0, 2)))], {"axis": axis}


@op_case("gather_grad", wrt=(0,))
def gather_grad_values(draw):
    s = shape(draw, min_rank=1)
    axis = draw(st.integers(-len(s), len(s) - 1))
    idx = _indices(draw, s[axis], draw(st.integers(0, 2)))
    a = axis % len(s)
    g_shape = s[:a] + idx.shape + s[a + 1:]
    return [array(draw, g_shape), idx, array(draw, s)], {"axis": axis}


def _top_k_case(op):
    def draw_case(draw):
        s = shape(draw, min_rank=1)
        axis = draw(st.integers(-len(s), len(s) - 1))
        k = draw(st.integers(1, s[axis]))
        return [distinct(draw, s)], {"k": k, "axis": axis}
    draw_case.__name__ = f"{op}_distinct"
    op_case(op)(draw_case)


_top_k_case("top_k")
_top_k_case("top_k_indices")


def _picks(draw, s, axis):
    """Distinct positions along ``axis`` (k of them), as top_k gives."""
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    a = axis % len(s)
    k = draw(st.integers(1, s[a]))
    moved = np.moveaxis(np.zeros(s), a, -1)
    order = np.argsort(rng.random(moved.shape), axis=-1)[..., :k]
    return np.moveaxis(order, -1, a).astype(np.int64)


@op_case("top_k_grad", wrt=(0,))
def top_k_grad_values(draw):
    s = shape(draw, min_rank=1)
    axis = draw(st.integers(-len(s), len(s) - 1))
    picks = _picks(draw, s, axis)
    return [array(draw, picks.shape), picks, array(draw, s)], {"axis": axis}


@op_case("take_along", wrt=(0,))
def take_along_values(draw):
    s = shape(draw, min_rank=1)
    axis = draw(st.integers(-len(s), len(s) - 1))
    return [array(draw, s), _picks(draw, s, axis)], {"axis": axis}


@op_case("tile")
def tile_values(draw):
    s = shape(draw, max_rank=3)
    return [array(draw, s)], {"reps": tuple(draw(st.integers(1, 3)) for _ in s)}


@op_case("tile_grad", wrt=(0,))
def tile_grad_values(draw):
    s = shape(draw, max_rank=3)
    reps = tuple(draw(st.integers(1, 3)) for _ in s)
    return [array(draw, tuple(d * r for d, r in zip(s, reps))), array(draw, s)], {"reps": reps}


@op_case("expand")
def expand_values(draw):
    s = shape(draw, max_rank=3)
    ones = tuple(1 if draw(st.booleans()) else d for d in s)
    lead = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 1))))
    return [array(draw, ones)], {"shape": lead + s}
