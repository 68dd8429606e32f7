"""Property cases for ops/shape.py."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tests.ops.harness import array, op_case, shape


def factorization(draw, n: int, max_rank: int = 4) -> tuple[int, ...]:
    """A random shape with ``n`` elements (factors drawn from n's divisors)."""
    dims = []
    rest = n
    for _ in range(draw(st.integers(0, max_rank - 1))):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = draw(st.sampled_from(divisors))
        dims.append(d)
        rest //= d
    dims.append(rest)
    return tuple(draw(st.permutations(dims)))


@op_case("reshape")
def reshape_any(draw):
    s = shape(draw)
    target = list(factorization(draw, int(np.prod(s))))
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return [array(draw, s)], {"shape": tuple(target)}


@op_case("reshape_like", wrt=(0,))
def reshape_like_any(draw):
    s = shape(draw)
    return [array(draw, s), array(draw, factorization(draw, int(np.prod(s))))], {}


@op_case("transpose")
def transpose_any(draw):
    s = shape(draw, max_rank=4)
    perm = draw(st.one_of(st.none(), st.permutations(range(len(s))).map(tuple)))
    return [array(draw, s)], {"perm": perm}


@op_case("concat")
def concat_along_any_axis(draw):
    s = shape(draw, min_rank=1)
    axis = draw(st.integers(-len(s), len(s) - 1))
    arrays = []
    for _ in range(draw(st.integers(1, 3))):
        part = list(s)
        part[axis] = draw(st.integers(1, 3))
        arrays.append(array(draw, tuple(part)))
    return arrays, {"axis": axis}


@op_case("concat_part")
def concat_part_slices(draw):
    s = list(shape(draw, min_rank=1))
    axis = draw(st.integers(0, len(s) - 1))
    parts = draw(st.integers(1, 4))
    s[axis] = parts * draw(st.integers(1, 2))
    start = draw(st.integers(0, parts - 1))
    stop = draw(st.integers(start + 1, parts))
    attrs = {"axis": axis - len(s) if draw(st.booleans()) else axis, "start": start,
             "stop": stop, "parts": parts}
    return [array(draw, tuple(s))], attrs


def paddings(draw, rank: int) -> tuple:
    return tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank))


@op_case("pad")
def pad_any(draw):
    s = shape(draw)
    return [array(draw, s)], {"paddings": paddings(draw, len(s)),
                              "value": draw(st.sampled_from([0.0, 1.5, -2]))}


@op_case("unpad")
def unpad_any(draw):
    pads = paddings(draw, draw(st.integers(0, 3)))
    s = tuple(lo + hi + draw(st.integers(0, 2)) for lo, hi in pads)
    return [array(draw, s)], {"paddings": pads}


@op_case("flip")
def flip_any(draw):
    s = shape(draw, min_rank=1)
    rank = len(s)
    if draw(st.booleans()):
        axis = draw(st.integers(-rank, rank - 1))
    else:
        axis = tuple(draw(st.lists(st.integers(0, rank - 1), unique=True, max_size=rank)))
    return [array(draw, s)], {"axis": axis}


@op_case("one_hot", grad=False)
def one_hot_ids(draw):
    depth = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    ids = rng.integers(-1, depth + 1, shape(draw)).astype(dtype)  # out of range -> zero row
    return [ids], {"depth": depth, "dtype": draw(st.sampled_from(["f32", "f64", "i32"]))}
