"""Checkpoints: round trip, atomic replacement, damaged files and other networks refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from netlang.errors import CheckpointError
from netlang.ir.graph import Graph
from netlang.ir.types import DType, TensorType
from netlang.ops.builder import Builder
from netlang.runtime import checkpoint

ROOT = Path(__file__).resolve().parents[2]


def network(width: int = 3, extra: bool = False) -> Graph:
    b = Builder(Graph(name="net"))
    x = b.input("x", TensorType(DType.f32, (2, 4)))
    with b.scope("fc1"):
        w = b.param("W", TensorType(DType.f32, (4, width)))
    b.state("bn/mean", TensorType(DType.f32, (width,)))
    if extra:
        b.param("fc2/W", TensorType(DType.f32, (width, 2)))
    b.graph.outputs["y"] = b.matmul(x, w)
    return b.graph


ARRAYS = {"fc1/W": np.arange(12, dtype=np.float32).reshape(4, 3),
          "bn/mean": np.zeros(3, np.float32), "adam/m/fc1/W": np.ones((4, 3), np.float32)}


def test_round_trip_keeps_arrays_hash_and_metadata(tmp_path):
    path = checkpoint.save(tmp_path / "run.ckpt", ARRAYS, network(), {"step": 7})
    arrays, meta = checkpoint.read(path)
    assert sorted(arrays) == sorted(ARRAYS)
    for name, value in ARRAYS.items():
        np.testing.assert_array_equal(arrays[name], value)
        assert arrays[name].dtype == value.dtype
    assert meta["step"] == 7 and meta["network"] == "net"
    assert meta["hash"] == checkpoint.network_hash(network())
    assert meta["variables"] == {"fc1/W": "f32[4,3]", "bn/mean": "f32[3]"}
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]   # no temporary left


def test_other_networks_are_refused_naming_each_difference(tmp_path):
    path = checkpoint.save(tmp_path / "run.ckpt", ARRAYS, network())
    _, meta = checkpoint.read(path)
    checkpoint.check_compatible(path, network(), meta)            # same network: fine
    with pytest.raises(CheckpointError) as info:
        checkpoint.check_compatible(path, network(width=5, extra=True), meta)
    assert str(info.value) == (
        f"checkpoint error: {path} is a checkpoint of another network ('net'); its variables "
        "differ:\n"
        "  shape: fc1/W is f32[4,5] here but f32[4,3] in the checkpoint\n"
        "  missing: fc2/W (f32[5,2]) is not in the checkpoint\n"
        "  shape: bn/mean is f32[5] here but f32[3] in the checkpoint\n"
        "hint: restore a checkpoint saved from this spec")
    smaller = network()
    del smaller.state["bn/mean"]
    with pytest.raises(CheckpointError, match="extra: bn/mean \\(f32\\[3\\]\\) is in the chec"):
        checkpoint.check_compatible(path, smaller, meta)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "text"])
def test_damaged_files_are_checkpoint_errors_naming_the_file(tmp_path, damage):
    path = checkpoint.save(tmp_path / "run.ckpt", ARRAYS, network())
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        middle = data.index(ARRAYS["fc1/W"].tobytes()) + 5
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("network net {}\n")
    with pytest.raises(CheckpointError) as info:
        checkpoint.read(path)
    assert str(path) in str(info.value)


def test_missing_file_and_unwritable_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*nothing.ckpt"):
        checkpoint.read(tmp_path / "nothing.ckpt")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="cannot write the checkpoint"):
        checkpoint.save(blocker / "run.ckpt", ARRAYS, network())


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "run.ckpt", ARRAYS, network(), {"step": 1})

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError, match="No space left on device"):
        checkpoint.save(path, {"fc1/W": np.ones((4, 3), np.float32)}, network(), {"step": 2})
    monkeypatch.undo()
    assert checkpoint.read(path)[1]["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


def test_a_killed_writer_never_leaves_a_broken_file(tmp_path):
    """A child saves large checkpoints in a loop; SIGKILL it mid-way, twice: the
    file on disk always reads back as one complete checkpoint."""
    path = tmp_path / "run.ckpt"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        from tests.runtime.test_checkpoint import network
        from netlang.runtime import checkpoint
        step = 0
        while True:
            step += 1
            big = np.full((4, 3), step, np.float32)
            pad = np.full(2_000_000, step, np.float32)
            checkpoint.save({str(path)!r}, {{"fc1/W": big, "pad": pad}}, network(),
                            {{"step": step}})
            print(step, flush=True)
    """)
    for delay in (0.2, 0.45):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        child.stdout.readline()          # at least one complete save exists
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        arrays, meta = checkpoint.read(path)
        assert (arrays["pad"] == meta["step"]).all() and arrays["fc1/W"][0, 0] == meta["step"]


def test_a_pickle_is_refused_without_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError) as info:
        checkpoint.read(path)
    assert str(info.value) == (
        f"checkpoint error: {path} is not a readable netlang checkpoint (it holds pickled "
        "Python objects)\nhint: the file is truncated or corrupt; use an earlier copy")
