"""Arrays named on the command line (``--feed x=v.npy``, ``--input x.npy``): one clear error
for a missing file, a pickled object array or a file that is not .npy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from netlang.errors import UsageError


def read_npy(path: str, what: str, hint: str = "save it with numpy.save(path, array)"
             ) -> np.ndarray:
    """The array in ``path``; ``what`` names the flag in the error (``--feed x``)."""
    try:
        return np.load(Path(path), allow_pickle=False)
    except OSError as err:
        raise UsageError(f"{what}: cannot read '{path}': {err.strerror or err}") from None
    except ValueError as err:
        raise UsageError(f"{what}: cannot read '{path}': {_why(path, err)}", hint=hint) from None


def _why(path: str, err: ValueError) -> str:
    """NumPy takes any file without its header for a pickle; say which it really is."""
    with open(path, "rb") as f:
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            return "it is not a .npy file (no NumPy header)"
    return "it holds Python objects, not a plain array" if "pickle" in str(err) else str(err)


NPY_MAGIC = b"\x93NUMPY"
