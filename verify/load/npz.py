"""``.npz`` MLPs: arrays ``W0..W{L-1}``, ``b0..b{L-1}`` and an optional ``meta`` JSON string.

``meta`` keys used: ``input_mean``/``input_std`` (``z0 = (x - mean) / std``), ``input_range``
(the domain), ``input_shape``, ``final_relu`` (a ReLU after the last layer, kept exact by an extra
identity layer) and ``weight_layout`` (``"out_in"`` or ``"in_out"``). Without ``weight_layout``
the orientation of every ``W_i`` is detected from the bias sizes and the chaining of shapes.
The reference is a plain numpy float64 forward pass of the stored arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from verify.load import layers
from verify.load.base import LoadedModel, LoadError, checked_domain, checked_shape, finish, resolve_domain
from verify.network import Affine, ReLU
from verify.npzfile import open_npz, real_array


def load_npz(
    path: Path, *, domain: tuple | None, input_shape: Sequence[int] | None, mean: object = None, std: object = None
) -> LoadedModel:
    """Load an npz MLP (see module docstring). Explicit arguments override ``meta``."""
    data = open_npz(path, LoadError, "a model file")
    meta = _meta(data, path)
    n = sum(1 for k in data.files if k.startswith("W") and k[1:].isdigit())
    if n == 0:
        raise LoadError(f"{path} is not a model file (an .npz model needs arrays W0, b0, W1, b1, ...; found {data.files[:8]})")
    ws = [real_array(data, f"W{i}", LoadError, path).astype(np.float64) for i in range(n)]
    bs = [real_array(data, f"b{i}", LoadError, path).astype(np.float64).reshape(-1) for i in range(n)]
    ws = _orient(ws, bs, meta.get("weight_layout"), path)
    mean = mean if mean is not None else meta.get("input_mean")
    std = std if std is not None else meta.get("input_std")
    if domain is None and "input_range" in meta:
        domain = checked_domain(meta["input_range"], f"{path}: meta 'input_range'")
    domain = resolve_domain(domain)
    shape = checked_shape(input_shape if input_shape is not None else meta.get("input_shape", ws[0].shape[1]), str(path))
    if int(np.prod(shape)) != ws[0].shape[1]:
        raise LoadError(f"{path}: input shape {shape} has {int(np.prod(shape))} values but W0 expects {ws[0].shape[1]}")
    final_relu = bool(meta.get("final_relu", False))
    pre = layers.input_normalization(mean, std, shape) if (mean is not None or std is not None) else None
    ops: list = [] if pre is None else [pre]
    for i, (w, b) in enumerate(zip(ws, bs)):
        ops += [Affine(w, b, f"W{i}"), ReLU(f"relu{i}")]
    if not final_relu:
        ops.pop()  # a trailing ReLU is kept exact by build_network (identity output layer)
    ref = _reference(ws, bs, pre, final_relu)
    return finish(
        ops, shape, ref, domain=domain, source=f"npz weights ({n} layers)", what=str(path), name=path.stem,
        float32=False, meta=meta,
    )


def _meta(data: np.lib.npyio.NpzFile, path: Path) -> dict:
    if "meta" not in data.files:
        return {}
    try:
        meta = json.loads(str(data["meta"]))
    except (json.JSONDecodeError, ValueError) as exc:
        raise LoadError(f"{path}: the 'meta' entry is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise LoadError(f"{path}: the 'meta' entry must be a JSON object")
    return meta


def _orient(ws: list[np.ndarray], bs: list[np.ndarray], layout: str | None, path: Path) -> list[np.ndarray]:
    """Weights as ``(out, in)``: from ``layout`` or the one orientation consistent with biases and chaining."""
    for i, w in enumerate(ws):
        if w.ndim != 2:
            raise LoadError(f"{path}: W{i} must be 2-D, got shape {w.shape}")
    if layout not in (None, "out_in", "in_out"):
        raise LoadError(f"{path}: meta weight_layout must be 'out_in' or 'in_out', got {layout!r}")
    options = {"out_in": ws, "in_out": [w.T for w in ws]}
    if layout is not None:
        cands = [layout]
    else:
        cands = [k for k, cand in options.items() if _consistent(cand, bs)]
    if not cands:
        raise LoadError(f"{path}: shape mismatch between layers: {_first_mismatch(ws, bs)}")
    if len(cands) > 1:
        raise LoadError(f"{path}: cannot tell whether weights are (out, in) or (in, out) (all square); add meta weight_layout")
    chosen = options[cands[0]]
    if not _consistent(chosen, bs):
        raise LoadError(f"{path}: shape mismatch between layers: {_first_mismatch(chosen, bs)}")
    return chosen


def _consistent(ws: list[np.ndarray], bs: list[np.ndarray]) -> bool:
    if any(w.shape[0] != b.size for w, b in zip(ws, bs)):
        return False
    return all(ws[i + 1].shape[1] == ws[i].shape[0] for i in range(len(ws) - 1))


def _first_mismatch(ws: list[np.ndarray], bs: list[np.ndarray]) -> str:
    for i, (w, b) in enumerate(zip(ws, bs)):
        if b.size not in w.shape:
            return f"b{i} has {b.size} entries but W{i} has shape {w.shape}"
    for i in range(len(ws) - 1):
        if ws[i + 1].shape[1] != ws[i].shape[0]:
            return f"W{i} has shape {ws[i].shape} and W{i + 1} has shape {ws[i + 1].shape}, which do not chain"
    return "the weights are neither all (out, in) nor all (in, out)"


def _reference(ws: list[np.ndarray], bs: list[np.ndarray], pre: Affine | None, final_relu: bool):
    def reference(x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if pre is not None:
            z = pre.apply(z)
        for i, (w, b) in enumerate(zip(ws, bs)):
            z = z @ w.T + b
            if i < len(ws) - 1 or final_relu:
                z = np.maximum(z, 0.0)
        return z

    return reference
