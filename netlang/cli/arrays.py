"""Arrays named on the command line (``--feed x=v.npy``, ``--input x.npy``): one clear error
naming the file for a missing file, a file that is not .npy (an .npz archive, a damaged
one), a pickled object array, or values that are not real numbers (text, complex, dates)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from netlang.errors import UsageError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
NOT_NUMBERS = {"U": "text", "S": "bytes", "V": "structured", "c": "complex",
               "M": "datetime", "m": "timedelta"}


def read_npy(path: str, what: str, hint: str = "save it with numpy.save(path, array)"
             ) -> np.ndarray:
    """The array in ``path``; ``what`` names the flag in the error (``--feed x``)."""
    try:
        with open(Path(path), "rb") as f:
            magic = f.read(len(NPY_MAGIC))
    except OSError as err:
        raise UsageError(f"{what}: cannot read '{path}': {err.strerror or err}") from None
    if magic.startswith(ZIP_MAGIC):
        raise UsageError(f"{what}: cannot read '{path}': it is an .npz archive, not a .npy "
                         f"file", hint=hint)
    if magic != NPY_MAGIC:
        raise UsageError(f"{what}: cannot read '{path}': it is not a .npy file (no NumPy "
                         f"header)", hint=hint)
    try:
        array = np.load(Path(path), allow_pickle=False)
    except OSError as err:
        raise UsageError(f"{what}: cannot read '{path}': {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - a damaged header raises many types in NumPy
        reason = ("it holds Python objects, not a plain array" if "pickle" in str(err)
                  else str(err) or type(err).__name__)
        raise UsageError(f"{what}: cannot read '{path}': {reason}", hint=hint) from None
    return check_numbers(array, path, what)


def check_numbers(array: np.ndarray, path: str, what: str) -> np.ndarray:
    """Refuse arrays whose values are not real numbers (booleans count as numbers)."""
    if array.dtype.kind in NOT_NUMBERS:
        raise UsageError(f"{what}: cannot use '{path}': it holds "
                         f"{NOT_NUMBERS[array.dtype.kind]} values ({array.dtype}), not real "
                         f"numbers")
    return array
