"""Datasets for verification runs: inputs ``x`` of shape ``(N, in_dim)`` in the model's input units
(float64) and labels ``y`` of shape ``(N,)`` (int64).

Sources:

* ``"digits"`` (or ``None``): scikit-learn's bundled 8x8 digits, pixels divided by 16 so they lie
  in [0, 1]; the held-out TEST part of :func:`digits_split` (``"digits-train"`` gives the training part).
* ``.npz`` with arrays ``x`` and ``y``; ``uint8`` images are divided by 255 (so MNIST pixels land in
  [0, 1]); other dtypes are used as stored.
* PyTorch tensor files (``.pt/.pth``), read with ``weights_only=True``: an ``(x, y)`` tuple/list or a
  dict with ``x`` and ``y``; ``uint8`` images are divided by 255 as above.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from verify.messages import one_line
from verify.npzfile import open_npz, real_array

DIGITS = "digits"
DIGITS_TRAIN = "digits-train"
DIGITS_TEST_FRACTION = 0.2


class DataError(ValueError):
    """The dataset cannot be read or does not fit the model (one line)."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed stratified split of scikit-learn's digits: ``(x_train, y_train, x_test, y_test)``.

    ``x`` has shape ``(N, 64)``, float64 in [0, 1] (pixel / 16); ``y`` is int64. The test part is
    ``DIGITS_TEST_FRACTION`` of every class, chosen by ``numpy.random.default_rng(seed)``; both
    parts keep the original order of the examples.
    """
    x, y = _digits()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(DIGITS_TEST_FRACTION * len(idx)))
        test[rng.permutation(idx)[:k]] = True
    return x[~test], y[~test], x[test], y[test]


@functools.lru_cache(maxsize=1)
def _digits_cached() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64) / 16.0, np.asarray(bunch.target, dtype=np.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: ``x`` (N, 64) in [0, 1], ``y`` (N,); fresh copies (the cache stays intact)."""
    x, y = _digits_cached()
    return x.copy(), y.copy()


def load_dataset(path: str | None, n: int | None, start: int = 0, in_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Examples ``start .. start+n-1`` (all from ``start`` when ``n`` is None) of a dataset.

    Returns ``x`` ``(N, in_dim)`` float64 in model input units and ``y`` ``(N,)`` int64. Raises
    :class:`DataError` when the source is missing or malformed, or when ``in_dim`` does not match.
    """
    name = DIGITS if path is None else str(path)
    if name in (DIGITS, DIGITS_TRAIN):
        x_tr, y_tr, x_te, y_te = digits_split()
        x, y = (x_te, y_te) if name == DIGITS else (x_tr, y_tr)
    else:
        x, y = _read_file(Path(name))
    x, y = _normalize(x, y, name)
    return _select(x, y, n, start, in_dim, name)


def _read_file(p: Path) -> tuple[object, object]:
    if not p.exists():
        raise DataError(f"dataset {p} does not exist (give an .npz with x and y, a torch file, or 'digits')")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"dataset {p} is empty (0 bytes)")
    if p.suffix.lower() == ".npz":
        d = open_npz(p, DataError, "a dataset (.npz with arrays x and y)")
        missing = [k for k in ("x", "y") if k not in d.files]
        if missing:
            raise DataError(f"dataset {p} has no array '{missing[0]}' (found {d.files}); it needs arrays x and y")
        return real_array(d, "x", DataError, p), real_array(d, "y", DataError, p)
    return _read_torch(p)


def _read_torch(p: Path) -> tuple[object, object]:
    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many error types for non-tensor files
        detail = one_line(exc, 100)
        raise DataError(f"{p} is not a dataset file (expected .npz with x, y or a torch (x, y) file: {detail})") from exc
    if isinstance(obj, dict) and "x" in obj and "y" in obj:
        return obj["x"], obj["y"]
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    raise DataError(f"{p}: a torch dataset file must hold an (x, y) tuple or a dict with 'x' and 'y', got {type(obj).__name__}")


def _to_numpy(a: object, name: str) -> np.ndarray:
    try:
        out = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)  # type: ignore[union-attr]
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"dataset {name}: x and y must be arrays of numbers ({one_line(exc)})") from exc
    if not (out.dtype == bool or np.issubdtype(out.dtype, np.integer) or np.issubdtype(out.dtype, np.floating)):
        raise DataError(f"dataset {name}: x and y must be real numbers, got dtype {out.dtype}")
    return out


def _normalize(x: object, y: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = _to_numpy(x, name), _to_numpy(y, name)
    if xa.ndim < 1 or xa.shape[0] == 0:
        raise DataError(f"dataset {name} has no examples")
    scale = 255.0 if xa.dtype == np.uint8 else 1.0
    xf = xa.reshape(xa.shape[0], -1).astype(np.float64) / scale
    if ya.ndim == 2 and ya.shape[1] == 1:
        ya = ya[:, 0]
    if ya.ndim != 1 or ya.shape[0] != xf.shape[0]:
        raise DataError(f"dataset {name}: labels must have shape ({xf.shape[0]},), got {ya.shape}")
    if not np.all(np.isfinite(xf)):
        raise DataError(f"dataset {name} contains NaN or infinite inputs")
    if not np.issubdtype(ya.dtype, np.integer):
        if not (np.all(np.isfinite(ya)) and np.all(np.equal(np.mod(ya, 1), 0))):
            raise DataError(f"dataset {name}: labels must be integers, got dtype {ya.dtype}")
        if ya.size and np.max(np.abs(ya)) > 2**53:
            raise DataError(f"dataset {name}: label {ya[np.argmax(np.abs(ya))]:g} is not a class index")
    return xf, ya.astype(np.int64)


def _select(x: np.ndarray, y: np.ndarray, n: int | None, start: int, in_dim: int | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    if in_dim is not None and x.shape[1] != in_dim:
        raise DataError(f"dataset {name} has {x.shape[1]} values per example but the model expects {in_dim} inputs")
    if start < 0 or start >= x.shape[0]:
        raise DataError(f"start index {start} is outside dataset {name}, which has {x.shape[0]} examples")
    if n is not None and n < 1:
        raise DataError(f"the number of examples must be at least 1, got {n}")
    stop = x.shape[0] if n is None else min(x.shape[0], start + n)
    return np.ascontiguousarray(x[start:stop]), np.ascontiguousarray(y[start:stop])
