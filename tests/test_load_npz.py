"""npz loader: orientation detection, meta conventions, and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verify.load import LoadError, load_model


def _arrays(seed: int = 0, dims: tuple[int, ...] = (6, 5, 4, 3)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(b, a)) for a, b in zip(dims[:-1], dims[1:])]
    return ws, [rng.normal(size=b) for b in dims[1:]]


def _forward(ws: list[np.ndarray], bs: list[np.ndarray], x: np.ndarray, final_relu: bool = False) -> np.ndarray:
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = x @ w.T + b
        if i < len(ws) - 1 or final_relu:
            x = np.maximum(x, 0)
    return x


def _save(path: Path, ws: list, bs: list, meta: dict | None = None, transpose: bool = False) -> Path:
    arrays = {f"W{i}": (w.T if transpose else w) for i, w in enumerate(ws)}
    arrays.update({f"b{i}": b for i, b in enumerate(bs)})
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("transpose", [False, True])
def test_orientation_detected(tmp_path: Path, transpose: bool) -> None:
    ws, bs = _arrays()
    m = load_model(_save(tmp_path / "n.npz", ws, bs, transpose=transpose))
    x = np.random.default_rng(1).uniform(size=(10, 6))
    np.testing.assert_allclose(m.network.forward(x), _forward(ws, bs, x), atol=1e-12)
    assert m.network.describe() == "6-5-4-3"


def test_meta_normalization_range_shape_final_relu(tmp_path: Path) -> None:
    ws, bs = _arrays(2)
    meta = {"input_mean": 0.5, "input_std": 0.25, "input_range": [-1.0, 1.0], "input_shape": [2, 3], "final_relu": True}
    m = load_model(_save(tmp_path / "n.npz", ws, bs, meta))
    x = np.random.default_rng(3).uniform(-1, 1, size=(10, 6))
    np.testing.assert_allclose(m.network.forward(x), _forward(ws, bs, (x - 0.5) / 0.25, final_relu=True), atol=1e-12)
    assert m.network.input_shape == (2, 3)
    assert np.all(m.network.domain_lower == -1.0) and np.all(m.network.domain_upper == 1.0)
    assert any("ReLU on the outputs" in n for n in m.network.notes)


def test_square_weights_are_ambiguous(tmp_path: Path) -> None:
    ws, bs = _arrays(4, (3, 3, 3))
    with pytest.raises(LoadError, match=r"cannot tell whether weights are \(out, in\) or \(in, out\)"):
        load_model(_save(tmp_path / "sq.npz", ws, bs))
    m = load_model(_save(tmp_path / "sq2.npz", ws, bs, {"weight_layout": "in_out"}))
    x = np.random.default_rng(5).uniform(size=(4, 3))
    np.testing.assert_allclose(m.network.forward(x), _forward([w.T for w in ws], bs, x), atol=1e-12)


def test_nan_weights_named(tmp_path: Path) -> None:
    ws, bs = _arrays(6)
    ws[1][0, 0] = np.nan
    with pytest.raises(LoadError, match=r"W1 \(position 1\) has NaN or Inf weights"):
        load_model(_save(tmp_path / "nan.npz", ws, bs))


def test_shape_mismatch_named(tmp_path: Path) -> None:
    ws, bs = _arrays(7)
    ws[1] = np.ones((4, 7))
    with pytest.raises(LoadError, match=r"shape mismatch between layers: W0 has shape \(5, 6\) and W1 has shape \(4, 7\)"):
        load_model(_save(tmp_path / "mm.npz", ws, bs))


def test_missing_bias_and_not_a_model(tmp_path: Path) -> None:
    ws, bs = _arrays(8)
    with pytest.raises(LoadError, match="missing array b2"):
        load_model(_save(tmp_path / "nb.npz", ws, bs[:2]))
    np.savez(tmp_path / "data.npz", x=np.zeros((3, 4)), y=np.zeros(3))
    with pytest.raises(LoadError, match=r"data.npz is not a model file \(an .npz model needs arrays W0, b0"):
        load_model(tmp_path / "data.npz")
