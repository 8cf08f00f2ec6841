"""Reading ``.npz`` archives safely (no pickles) for the model and dataset loaders.

Every failure is raised as the caller's one-line error type: a damaged or empty archive, a missing
array, an array of Python objects (which would need unpickling, so it is refused) or of a non-real dtype.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from verify.messages import one_line

#: what numpy raises for damaged, empty or pickled archives and arrays
READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile)


def open_npz(path: Path, error: type[Exception], what: str) -> np.lib.npyio.NpzFile:
    """``np.load(path, allow_pickle=False)``; ``error(...)`` naming ``what`` when it cannot be read."""
    try:
        return np.load(path, allow_pickle=False)
    except READ_ERRORS as exc:
        raise error(f"{path} is not {what} (cannot read it as .npz: {one_line(exc)})") from exc


def real_array(data: np.lib.npyio.NpzFile, key: str, error: type[Exception], path: Path) -> np.ndarray:
    """Array ``key`` of an open archive: real numbers (bool, integer or float), never objects or complex."""
    try:
        a = data[key]
    except KeyError:
        raise error(f"{path}: missing array {key} (found {', '.join(data.files[:8]) or 'none'})") from None
    except READ_ERRORS as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise error(f"{path}: array {key!r} holds Python objects (a pickle), which are not loaded; "
                        "save plain numeric arrays") from exc
        raise error(f"{path}: array {key!r} cannot be read ({one_line(exc)})") from exc
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise error(f"{path}: array {key!r} has dtype {a.dtype}; expected real numbers")
    return a
