"""The idx file format of MNIST and Fashion-MNIST, read and checked byte for byte.

An idx file is a 4-byte magic (two zero bytes, a type code, the number of dims), one
big-endian int32 per dim, then the values.  Files may be stored gzipped (``name.gz``); the
sha256 sums we pin are those of the uncompressed bytes, so both forms verify the same way.
Every problem (bad gzip, wrong magic, truncated data, wrong checksum) names the file.
"""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from netlang.errors import DataError

# idx type code -> numpy dtype (big-endian where it matters)
IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: Path) -> bytes:
    """The file's (uncompressed) bytes; a broken gzip stream is a ``DataError``."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: corrupt gzip data ({err})") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_idx(data: bytes, where: str) -> np.ndarray:
    """The array an idx file holds; a short or malformed file is a ``DataError``."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{where}: not an idx file (bad magic number)")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated (the header needs {header} bytes, "
                        f"the file has {len(data)})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        shape = "x".join(str(d) for d in dims)
        state = "truncated" if len(data) < expected else "too long"
        raise DataError(f"{where}: {state} (a {shape} idx file has {expected} bytes, "
                        f"this one has {len(data)})")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_verified(path: Path, expected_sha: str, label: str) -> np.ndarray:
    """Read an idx(.gz) file, refusing it unless its content has the pinned sha256.

    ``label`` says what the file should be (``MNIST train-images-idx3-ubyte``) so a
    mismatch can say what was expected.
    """
    data = read_bytes(path)
    array = parse_idx(data, str(path))
    digest = sha256(data)
    if digest != expected_sha:
        raise DataError(f"{path}: sha256 mismatch: this is not the {label} file "
                        f"(expected {expected_sha}, got {digest})")
    return array


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an array as an idx file (tests and caches use it)."""
    array = np.asarray(array)
    code = next(c for c, t in IDX_TYPES.items()
                if (t.kind, t.itemsize) == (array.dtype.kind, array.dtype.itemsize))
    big = array.astype(IDX_TYPES[code])
    data = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data += big.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)
