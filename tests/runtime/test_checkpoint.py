"""Checkpoints: round trip, atomic replacement, damaged files and other networks refused."""
from __future__ import annotations

import json
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


def test_a_file_that_is_no_archive_is_refused_without_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError) as info:
        checkpoint.read(path)
    assert str(info.value) == (
        f"checkpoint error: {path} is not a netlang checkpoint (not an .npz archive)\n"
        "hint: pass the last.ckpt file a training run wrote")


def rewrite(path, arrays, meta):
    """Write an archive by hand (as damage or another tool might), bypassing ``save``."""
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)),
                 **{f"a/{name}": value for name, value in arrays.items()})


def test_each_array_is_checked_against_the_checksum_in_the_manifest(tmp_path):
    """4 cases: one array's bytes changed, two arrays swapped, one array renamed away,
    an array added that the manifest does not list."""
    path = checkpoint.save(tmp_path / "run.ckpt", ARRAYS, network())
    arrays, meta = checkpoint.read(path)
    assert sorted(meta["checksums"]) == sorted(ARRAYS)
    hint = "\nhint: the file is corrupt; use an earlier copy"
    changed = {**arrays, "fc1/W": arrays["fc1/W"] + 1}
    swapped = {**arrays, "fc1/W": arrays["adam/m/fc1/W"], "adam/m/fc1/W": arrays["fc1/W"]}
    renamed = {k.replace("bn/", "bm/"): v for k, v in arrays.items()}
    added = {**arrays, "extra": np.zeros(2, np.float32)}
    cases = [
        (changed, "1 array does not match the checksum in its header: fc1/W"),
        (swapped, "2 arrays do not match the checksum in its header: fc1/W, adam/m/fc1/W"),
        (renamed, "1 array listed in its header is missing: bn/mean"),
        (added, "1 array is not listed in its header: extra"),
    ]
    for damaged, reason in cases:
        rewrite(path, damaged, meta)
        with pytest.raises(CheckpointError) as info:
            checkpoint.read(path)
        assert str(info.value) == f"checkpoint error: {path} is damaged: {reason}{hint}"


def test_a_checkpoint_without_a_variable_is_refused_naming_it(tmp_path):
    """3 cases: a variable missing, a required extra array missing, a wrong-typed array."""
    graph = network()
    arrays = {"fc1/W": ARRAYS["fc1/W"], "bn/mean": ARRAYS["bn/mean"]}
    checkpoint.check_complete("c.ckpt", graph, arrays)                  # complete: fine
    with pytest.raises(CheckpointError) as info:
        checkpoint.check_complete("c.ckpt", graph, {"fc1/W": ARRAYS["fc1/W"]})
    assert str(info.value) == (
        "checkpoint error: c.ckpt is incomplete: no array for bn/mean\nhint: the file is "
        "damaged or was not written by netlang; use an earlier copy")
    with pytest.raises(CheckpointError, match="^checkpoint error: c.ckpt is incomplete: no "
                                              "array for data/mean, data/scale\n"):
        checkpoint.check_complete("c.ckpt", graph, arrays, ("data/mean", "data/scale"))
    with pytest.raises(CheckpointError) as info:
        checkpoint.check_complete("c.ckpt", graph, {**arrays, "bn/mean": np.zeros(3, int)})
    assert str(info.value) == ("checkpoint error: c.ckpt: the array of 'bn/mean' does not "
                               "match its header (f32[3])\nhint: the file is corrupt; use an "
                               "earlier copy")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_checkpoints_get_the_mode_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = checkpoint.save(tmp_path / "run.ckpt", ARRAYS, network())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_foreign_and_damaged_containers_are_one_line_errors_naming_the_file(tmp_path):
    """4 cases: a .npy array, an .npz without a header, a zip whose member claims an
    unknown compression method, one that claims to be encrypted."""
    npy, bare = tmp_path / "x.npy", tmp_path / "bare.npz"
    np.save(npy, np.zeros(3))
    np.savez(bare, a=np.zeros(3))
    path = checkpoint.save(tmp_path / "run.ckpt", ARRAYS, network())
    data = path.read_bytes()
    method, flags = tmp_path / "method.ckpt", tmp_path / "flags.ckpt"
    central = data.index(b"PK\x01\x02")      # the first central directory entry
    method.write_bytes(data[:central + 10] + b"\x63\x00" + data[central + 12:])
    flags.write_bytes(data[:central + 8] + b"\x01\x00" + data[central + 10:])
    for bad, reason in [(npy, "is not a netlang checkpoint (it is a .npy array)"),
                        (bare, ("is not a netlang checkpoint (no 'netlang-checkpoint-1' "
                               "header)"))]:
        with pytest.raises(CheckpointError) as info:
            checkpoint.read(bad)
        assert str(info.value).splitlines()[0] == f"checkpoint error: {bad} {reason}"
    for bad in (method, flags):
        with pytest.raises(CheckpointError) as info:
            checkpoint.read(bad)
        assert str(info.value).startswith(
            f"checkpoint error: {bad} is not a readable netlang checkpoint (")
