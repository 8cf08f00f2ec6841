"""Dataset loading: builtin digits split, npz and torch files, and the error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_path
from verify.data import DataError, digits_split, load_dataset


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    from sklearn.datasets import load_digits

    x_tr, y_tr, x_te, y_te = digits_split()
    again = digits_split()
    for a, b in zip((x_tr, y_tr, x_te, y_te), again):
        np.testing.assert_array_equal(a, b)
    bunch = load_digits()
    assert len(y_tr) + len(y_te) == len(bunch.target)
    assert x_tr.shape[1] == x_te.shape[1] == 64 and x_te.dtype == np.float64 and y_te.dtype == np.int64
    assert x_te.min() >= 0.0 and x_te.max() <= 1.0 and x_te.max() == 1.0  # pixels / 16
    rows = {r.tobytes() for r in (bunch.data / 16.0)}
    assert all(r.tobytes() in rows for r in x_te)
    train_rows = {(r.tobytes(), int(c)) for r, c in zip(x_tr, y_tr)}
    assert not any((r.tobytes(), int(c)) in train_rows for r, c in zip(x_te, y_te))
    counts = np.bincount(y_te, minlength=10) / np.bincount(bunch.target, minlength=10)
    assert np.all(np.abs(counts - 0.2) < 0.02)
    other = digits_split(seed=1)
    assert not np.array_equal(other[3], y_te) or not np.array_equal(other[2], x_te)


def test_load_dataset_digits_is_the_test_part() -> None:
    _, _, x_te, y_te = digits_split()
    x, y = load_dataset("digits", n=10, start=5, in_dim=64)
    np.testing.assert_array_equal(x, x_te[5:15])
    np.testing.assert_array_equal(y, y_te[5:15])
    x_all, _ = load_dataset(None, None)
    assert len(x_all) == len(y_te)


def test_npz_uint8_scaled_and_mnist() -> None:
    x, y = load_dataset(str(shared_path("mnist", "mnist_test.npz")), n=3, start=2, in_dim=784)
    raw = np.load(shared_path("mnist", "mnist_test.npz"))
    np.testing.assert_array_equal(x, raw["x"][2:5].reshape(3, -1) / 255.0)
    np.testing.assert_array_equal(y, raw["y"][2:5])
    assert x.dtype == np.float64 and y.dtype == np.int64 and x.max() <= 1.0


def test_float_npz_and_torch_files(tmp_path: Path) -> None:
    xs = np.random.default_rng(0).normal(size=(5, 2, 3))
    ys = np.arange(5)
    np.savez(tmp_path / "d.npz", x=xs, y=ys)
    x, y = load_dataset(str(tmp_path / "d.npz"), None, in_dim=6)
    np.testing.assert_array_equal(x, xs.reshape(5, 6))  # floats are used as stored
    torch.save((torch.tensor(xs), torch.tensor(ys)), tmp_path / "t.pt")
    torch.save({"x": torch.tensor((xs > 0).astype(np.uint8)), "y": torch.tensor(ys)}, tmp_path / "u.pt")
    x, y = load_dataset(str(tmp_path / "t.pt"), 2, start=3)
    np.testing.assert_array_equal(x, xs[3:5].reshape(2, 6))
    np.testing.assert_array_equal(y, [3, 4])
    x, _ = load_dataset(str(tmp_path / "u.pt"), None)
    np.testing.assert_array_equal(x, (xs > 0).reshape(5, 6) / 255.0)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has 64 values per example but the model expects 784 inputs"):
        load_dataset("digits", 5, in_dim=784)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "none.npz"), 5)
    np.savez(tmp_path / "noy.npz", x=np.zeros((3, 4)))
    with pytest.raises(DataError, match="has no array 'y'"):
        load_dataset(str(tmp_path / "noy.npz"), 5)
    np.savez(tmp_path / "len.npz", x=np.zeros((3, 4)), y=np.zeros(2, dtype=int))
    with pytest.raises(DataError, match=r"labels must have shape \(3,\), got \(2,\)"):
        load_dataset(str(tmp_path / "len.npz"), 5)
    with pytest.raises(DataError, match="start index 400 is outside dataset digits"):
        load_dataset("digits", 5, start=400)
    (tmp_path / "bad.pt").write_bytes(b"\x00\x01 not a tensor file")
    with pytest.raises(DataError, match="is not a dataset file"):
        load_dataset(str(tmp_path / "bad.pt"), 5)
    np.savez(tmp_path / "nan.npz", x=np.array([[np.nan, 1.0]]), y=np.array([0]))
    with pytest.raises(DataError, match="NaN or infinite"):
        load_dataset(str(tmp_path / "nan.npz"), 1)
