"""Checkpoints of a session's state: arrays, a hash of the network, and metadata, saved atomically.

The file is an uncompressed ``.npz`` archive: every state array (parameters, batchnorm
statistics, optimizer slots) under ``a/<name>``, and ``__meta__``, a JSON header with the
format tag, the network's name and hash, its variables with their types, and the caller's
metadata.  Writing goes to a temporary file in the same folder, which is flushed, fsynced
and renamed over the target: a kill at any moment leaves the previous file whole.  Reading
a truncated or corrupt file (zip CRCs catch flipped bytes) is a ``CheckpointError`` naming
it; so is an array that is missing or does not match the checksum the header keeps for it
(a renamed or swapped zip member).  Restoring a checkpoint of another network is refused,
naming the variables that differ; ``check_complete`` refuses one that lacks a variable.
The file is created with the user's umask, like any file the user writes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from netlang.errors import CheckpointError
from netlang.ir.graph import Graph
from netlang.ir.printer import format_graph
from netlang.ir.types import DType, TensorType

FORMAT = "netlang-checkpoint-1"


def variables(graph: Graph) -> dict[str, str]:
    """Every parameter and state variable with its type, ``{"conv1/W": "f32[5,5,1,32]"}``."""
    return {name: str(graph.nodes[nid].type)
            for table in (graph.params, graph.state) for name, nid in table.items()}


def network_hash(graph: Graph) -> str:
    """A hash of the network's IR without source positions (comments do not change it)."""
    return hashlib.sha256(format_graph(graph, with_span=False).encode()).hexdigest()[:16]


def array_checksum(value: np.ndarray) -> str:
    """A hash of an array's dtype, shape and bytes (the manifest keeps one per array)."""
    value = np.ascontiguousarray(value)
    digest = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
    digest.update(memoryview(value).cast("B") if value.size else b"")
    return digest.hexdigest()[:16]


def write_atomically(path: Path, data: bytes, what: str = "the checkpoint") -> None:
    """Write ``data`` to ``path`` (making its folder) so that readers see the old file or the
    new, never a mix; a failure is a CheckpointError naming ``what`` and the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, data)
    except OSError as err:
        raise CheckpointError(f"cannot write {what} {path}: {err.strerror or err}") from None


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it over
    ``path``; raises OSError, leaving no temporary file.  The new file gets the mode the
    user's umask gives (mkstemp alone would make it 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def current_umask() -> int:
    """The process's umask, read from /proc where it can be (setting it to read it back is
    not thread-safe), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (some file systems cannot; the rename is done anyway)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: str | Path, arrays: dict[str, np.ndarray], graph: Graph,
         meta: dict[str, Any] | None = None, graph_hash: str | None = None) -> Path:
    """Save ``arrays`` (name -> array) and ``meta`` (JSON-able) for the network ``graph``
    (``graph_hash``: its ``network_hash``, where the caller keeps it)."""
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    header = {"format": FORMAT, "network": graph.name,
              "hash": graph_hash or network_hash(graph),
              "variables": variables(graph), **(meta or {}),
              "checksums": {name: array_checksum(value) for name, value in arrays.items()}}
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(json.dumps(header)),
             **{f"a/{name}": value for name, value in arrays.items()})
    path = Path(path)
    write_atomically(path, buffer.getvalue())
    return path


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint file; a missing, damaged or foreign file, or an array
    that is missing or fails its checksum, is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}",
                              hint="check the path, or save one with session.save(path)")
    arrays, meta = _read_archive(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a netlang checkpoint (no '{FORMAT}' header)")
    verify_checksums(path, arrays, meta)
    return arrays, meta


def _read_archive(path: Path) -> tuple[dict[str, np.ndarray], Any]:
    """The arrays and the parsed header of an .npz file, or the error saying why not."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise CheckpointError(f"cannot read the checkpoint {path}: {err.strerror}") from None
    if magic == b"\x93NUMPY":
        raise CheckpointError(f"{path} is not a netlang checkpoint (it is a .npy array)",
                              hint="pass the last.ckpt file a training run wrote")
    if not magic.startswith(b"PK"):
        raise CheckpointError(f"{path} is not a netlang checkpoint (not an .npz archive)",
                              hint="pass the last.ckpt file a training run wrote")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "__meta__" not in archive.files:
                raise CheckpointError(
                    f"{path} is not a netlang checkpoint (no '{FORMAT}' header)")
            meta = json.loads(str(archive["__meta__"]))
            arrays = {k[2:]: archive[k] for k in archive.files if k.startswith("a/")}
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any damage in the zip container lands here
        # zipfile and zlib raise many types for flipped bytes (BadZipFile, zlib.error,
        # NotImplementedError for a "compression method", RuntimeError for "encrypted").
        reason = "it holds pickled Python objects" if "pickle" in str(err) else (
            str(err) or type(err).__name__)
        raise CheckpointError(f"{path} is not a readable netlang checkpoint ({reason})",
                              hint="the file is truncated or corrupt; use an earlier copy"
                              ) from None
    return arrays, meta


def verify_checksums(path: str | Path, arrays: dict[str, np.ndarray],
                     meta: dict[str, Any]) -> None:
    """Refuse arrays the manifest lists but the file lacks, and arrays whose bytes differ
    from their recorded checksum (files written before checksums pass unchecked)."""
    sums = meta.get("checksums")
    if sums is None:
        return
    if not isinstance(sums, dict):
        raise CheckpointError(f"{path} is damaged: its header's checksums are unreadable",
                              hint=DAMAGED_HINT)
    missing = [name for name in sums if name not in arrays]
    if missing:
        raise CheckpointError(f"{path} is damaged: {_count(missing, 'array')} listed in its "
                              f"header {'is' if len(missing) == 1 else 'are'} missing: "
                              f"{_names(missing)}", hint=DAMAGED_HINT)
    unlisted = [name for name in arrays if name not in sums]
    if unlisted:
        raise CheckpointError(f"{path} is damaged: {_count(unlisted, 'array')} "
                              f"{'is' if len(unlisted) == 1 else 'are'} not listed in its "
                              f"header: {_names(unlisted)}", hint=DAMAGED_HINT)
    bad = [name for name, value in arrays.items() if array_checksum(value) != sums[name]]
    if bad:
        raise CheckpointError(f"{path} is damaged: {_count(bad, 'array')} "
                              f"{'does' if len(bad) == 1 else 'do'} not match the "
                              f"checksum in its header: {_names(bad)}", hint=DAMAGED_HINT)


DAMAGED_HINT = "the file is corrupt; use an earlier copy"


def _count(names: list[str], noun: str) -> str:
    return f"{len(names)} {noun}{'' if len(names) == 1 else 's'}"


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def type_text(array: Any) -> str | None:
    """``f32[3,1]`` for an array (as the IR prints types), None for a missing or odd one."""
    try:
        return str(TensorType(DType.of(array.dtype), tuple(array.shape)))
    except (AttributeError, ValueError, TypeError):
        return None


def check_complete(path: str | Path, graph: Graph, arrays: dict[str, np.ndarray],
                   required: tuple[str, ...] = ()) -> None:
    """Refuse a checkpoint that lacks an array for a variable of ``graph`` (or one of the
    ``required`` extra arrays), or whose array has another type than the variable: loading
    it would leave that variable silently at its initial value."""
    missing = [name for name in [*variables(graph), *required] if name not in arrays]
    if missing:
        raise CheckpointError(f"{path} is incomplete: no array for {_names(missing)}",
                              hint="the file is damaged or was not written by netlang; "
                                   "use an earlier copy")
    for name, kind in variables(graph).items():
        if type_text(arrays[name]) != kind:
            raise CheckpointError(
                f"{path}: the array of '{name}' does not match its header ({kind})",
                hint=DAMAGED_HINT)


def differences(graph: Graph, meta: dict[str, Any]) -> list[str]:
    """How the checkpoint's variables differ from the network's, one line each."""
    mine, theirs = variables(graph), meta.get("variables", {})
    lines = []
    for name, kind in mine.items():
        if name not in theirs:
            lines.append(f"missing: {name} ({kind}) is not in the checkpoint")
        elif theirs[name] != kind:
            lines.append(f"shape: {name} is {kind} here but {theirs[name]} in the checkpoint")
    lines += [f"extra: {name} ({kind}) is in the checkpoint but not in this network"
              for name, kind in theirs.items() if name not in mine]
    return lines


def refuse_another_network(path: str | Path, meta: dict[str, Any], diffs: list[str],
                           what: str = "variables",
                           hint: str = "restore a checkpoint saved from this spec") -> None:
    """Raise the error naming every variable that differs (the first dozen of them)."""
    if not diffs:
        return
    shown = diffs[:12] + ([f"... and {len(diffs) - 12} more"] if len(diffs) > 12 else [])
    raise CheckpointError(f"{path} is a checkpoint of another network "
                          f"('{meta.get('network')}'); its {what} differ:\n  "
                          + "\n  ".join(shown), hint=hint)


def check_compatible(path: str | Path, graph: Graph, meta: dict[str, Any]) -> None:
    """Refuse a checkpoint whose variables are not exactly this network's."""
    refuse_another_network(path, meta, differences(graph, meta))
