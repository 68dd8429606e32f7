"""Whose array is it (runtime/ownership.py): the CPU state's float variables side by side in
one ``VariableArena``, loads that copy into those places only where nobody else holds the
array, and the tests an in-place update makes before it writes over a variable."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

import netlang
from netlang.runtime.memory import ALIGNMENT
from netlang.runtime.ownership import VariableArena, arena_arrays, fits, in_arena, sole_holder

SPEC = """network n {
  input x: f32[N, 5]
  input label: i32[N]
  h = x |> dense(7) |> relu
  logits = dense(h, 3)
  loss xent = mean(softmax_cross_entropy(logits, label))
}"""


def address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def test_arena_arrays_lie_one_after_another_on_cache_line_boundaries():
    a, b, c = arena_arrays([((3,), np.float32), ((2, 5), np.float64), ((), np.float32)])
    assert (a.shape, b.shape, c.shape) == ((3,), (2, 5), ())
    assert a.base is b.base is c.base and type(a.base) is VariableArena
    # b's 80 bytes take two lines
    assert [address(x) - address(a) for x in (a, b, c)] == [0, ALIGNMENT, 3 * ALIGNMENT]
    assert not a.any() and not b.any() and not c.any()
    assert all(in_arena(x) and fits(x, x.shape, x.dtype) for x in (a, b, c))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_writes_its_own_copy_of_the_arena():
    """As with memory from malloc: a child's writes stay in the child."""
    (a,) = arena_arrays([((4,), np.float32)])
    pid = os.fork()
    if pid == 0:                                    # the child
        a[:] = 7.0
        os._exit(0)
    os.waitpid(pid, 0)
    np.testing.assert_array_equal(a, 0.0)


def test_a_view_or_a_second_name_makes_the_holder_no_longer_sole():
    (a,) = arena_arrays([((4,), np.float32)])
    box = {"a": a}
    del a
    assert sole_holder(box, "a")
    view = box["a"][1:]
    assert not sole_holder(box, "a")
    del view
    assert sole_holder(box, "a")
    held = box["a"]
    assert not sole_holder(box, "a")
    del held
    assert sole_holder(box, "a")
    assert not fits(box["a"][1:], (3,), np.dtype(np.float32))   # a view of an arena array
    assert not fits(box["a"], (4,), np.dtype(np.float64))


def test_a_cpu_session_keeps_its_float_variables_in_one_arena():
    model = netlang.compile(SPEC)
    session = model.session("cpu", 0)
    arrays = session.state.arrays
    places = {name: arrays[name] for name in arrays}
    assert places and all(in_arena(v) for v in places.values())
    assert len({id(v.base) for v in places.values()}) == 1
    assert all(address(v) % ALIGNMENT == 0 for v in places.values())
    ends = sorted((address(v), address(v) + v.nbytes) for v in places.values())
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(ends))


def test_a_load_copies_into_the_arena_unless_someone_holds_the_array(tmp_path):
    model = netlang.compile(SPEC)
    session = model.session("cpu", 0)
    name = min(session.state.arrays)
    shape = session.state.arrays[name].shape
    where = address(session.state.arrays[name])
    session.state.load({name: np.full(shape, 2.0, np.float32)})
    assert address(session.state.arrays[name]) == where
    assert in_arena(session.state.arrays[name])
    np.testing.assert_array_equal(session.state.arrays[name], 2.0)

    held = session.run(name)              # the user now holds the state's own array
    session.state.load({name: np.full(shape, 3.0, np.float32)})
    np.testing.assert_array_equal(held, 2.0)
    np.testing.assert_array_equal(session.state.arrays[name], 3.0)
    assert address(session.state.arrays[name]) != where

    session.save(tmp_path / "c.npz")      # a checkpoint restores every value, in place or not
    other = model.session("cpu", 1)
    before = {k: address(v) for k, v in other.state.arrays.items()}
    other.restore(tmp_path / "c.npz")
    assert {k: address(v) for k, v in other.state.arrays.items()} == before
    for key, value in session.state.to_numpy().items():
        np.testing.assert_array_equal(other.state.arrays[key], value, err_msg=key)
