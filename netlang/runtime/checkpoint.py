"""Checkpoints of a session's state: arrays, a hash of the network, and metadata, saved atomically.

The file is an uncompressed ``.npz`` archive: every state array (parameters, batchnorm
statistics, optimizer slots) under ``a/<name>``, and ``__meta__``, a JSON header with the
format tag, the network's name and hash, its variables with their types, and the caller's
metadata.  Writing goes to a temporary file in the same folder, which is flushed, fsynced
and renamed over the target: a kill at any moment leaves the previous file whole.  Reading
a truncated or corrupt file (zip CRCs catch flipped bytes) is a ``CheckpointError`` naming
it; restoring a checkpoint of another network is refused, naming the variables that differ.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from netlang.errors import CheckpointError
from netlang.ir.graph import Graph
from netlang.ir.printer import format_graph

FORMAT = "netlang-checkpoint-1"


def variables(graph: Graph) -> dict[str, str]:
    """Every parameter and state variable with its type, ``{"conv1/W": "f32[5,5,1,32]"}``."""
    return {name: str(graph.nodes[nid].type)
            for table in (graph.params, graph.state) for name, nid in table.items()}


def network_hash(graph: Graph) -> str:
    """A hash of the network's IR without source positions (comments do not change it)."""
    return hashlib.sha256(format_graph(graph, with_span=False).encode()).hexdigest()[:16]


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never a mix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CheckpointError(f"cannot write the checkpoint {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"cannot write the checkpoint {path}: {err.strerror}"
                                  ) from None
        raise
    _fsync_folder(path.parent)


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
         meta: dict[str, Any] | None = None) -> Path:
    """Save ``arrays`` (name -> array) and ``meta`` (JSON-able) for the network ``graph``."""
    header = {"format": FORMAT, "network": graph.name, "hash": network_hash(graph),
              "variables": variables(graph), **(meta or {})}
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(json.dumps(header)),
             **{f"a/{name}": np.asarray(value) for name, value in arrays.items()})
    path = Path(path)
    write_atomically(path, buffer.getvalue())
    return path


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a checkpoint file; a missing or damaged file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}",
                              hint="check the path, or save one with session.save(path)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["__meta__"]))
            arrays = {k[2:]: archive[k] for k in archive.files if k.startswith("a/")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            json.JSONDecodeError) as err:
        reason = "it holds pickled Python objects" if "pickle" in str(err) else str(err)
        raise CheckpointError(f"{path} is not a readable netlang checkpoint ({reason})",
                              hint="the file is truncated or corrupt; use an earlier copy"
                              ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a netlang checkpoint (no '{FORMAT}' header)")
    return arrays, meta


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
