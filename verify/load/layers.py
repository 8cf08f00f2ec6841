"""Affine maps of common layers on flattened (row-major) tensors, in float64.

Shapes here are those of ONE input (no batch dimension), e.g. ``(C, H, W)``. Every function returns
an :class:`~verify.network.Affine` acting on the flattened input and, where the shape changes, the
output shape. Convolutions are unrolled exactly into ``scipy.sparse`` CSR matrices by index
arithmetic (no floating-point work besides copying the weights).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from verify.load.base import LoadError
from verify.network import Affine


def as_f64(a: object) -> np.ndarray:
    """A float64 numpy copy of an array-like or torch tensor."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()  # type: ignore[union-attr]
    return np.array(a, dtype=np.float64)


def dense(weight: np.ndarray, bias: np.ndarray | None, in_shape: Sequence[int], name: str) -> tuple[Affine, tuple[int, ...]]:
    """``y = x W^T + b`` on the last axis of ``in_shape`` (``weight``: ``(out, in)``), like ``nn.Linear``."""
    weight = as_f64(weight)
    in_shape = tuple(in_shape)
    if weight.ndim != 2:
        raise LoadError(f"layer {name}: weight must be 2-D, got shape {weight.shape}")
    out_f, in_f = weight.shape
    bias = np.zeros(out_f) if bias is None else as_f64(bias).reshape(-1)
    if not in_shape or in_shape[-1] != in_f:
        raise LoadError(f"shape mismatch at layer {name}: expects {in_f} input features, previous layer produces shape {in_shape}")
    if bias.shape != (out_f,):
        raise LoadError(f"layer {name}: bias has {bias.size} entries but weight has {out_f} rows")
    lead = int(np.prod(in_shape[:-1]))
    if lead == 1:
        return Affine(weight, bias, name), (*in_shape[:-1], out_f)
    w = sp.kron(sp.identity(lead, format="csr"), sp.csr_matrix(weight), format="csr")
    return Affine(w, np.tile(bias, lead), name), (*in_shape[:-1], out_f)


def conv_output_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """Spatial output size of a convolution along one axis."""
    return (size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


def conv2d(
    weight: np.ndarray,
    bias: np.ndarray | None,
    in_shape: Sequence[int],
    stride: Sequence[int],
    pads: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    name: str,
) -> tuple[Affine, tuple[int, int, int]]:
    """Unrolled 2-D convolution (cross-correlation, zero padding) as a CSR matrix.

    ``weight``: ``(C_out, C_in/groups, kh, kw)``; ``in_shape``: ``(C_in, H, W)``; ``pads``:
    ``(top, left, bottom, right)``. Returns the affine map and the output shape ``(C_out, Ho, Wo)``.
    """
    weight = as_f64(weight)
    if weight.ndim != 4:
        raise LoadError(f"layer {name}: convolution weight must be 4-D, got shape {weight.shape}")
    if len(in_shape) != 3:
        raise LoadError(f"layer {name}: a 2-D convolution needs a (C, H, W) input, previous layer produces shape {tuple(in_shape)}")
    c_in, h, w = (int(s) for s in in_shape)
    c_out, cg_in, kh, kw = weight.shape
    if groups < 1 or c_in % groups or c_out % groups or cg_in * groups != c_in:
        raise LoadError(f"shape mismatch at layer {name}: weight {weight.shape} with groups={groups} does not fit {c_in} input channels")
    sh, sw = stride
    pt, pl, pb, pr = pads
    dh, dw = dilation
    ho = conv_output_size(h, kh, sh, pt, pb, dh)
    wo = conv_output_size(w, kw, sw, pl, pr, dw)
    if ho < 1 or wo < 1:
        raise LoadError(f"layer {name}: kernel {kh}x{kw} does not fit the {h}x{w} input")
    cg_out = c_out // groups
    co = np.arange(c_out).reshape(-1, 1, 1, 1, 1, 1)
    oh = np.arange(ho).reshape(1, -1, 1, 1, 1, 1)
    ow = np.arange(wo).reshape(1, 1, -1, 1, 1, 1)
    cl = np.arange(cg_in).reshape(1, 1, 1, -1, 1, 1)
    ki = np.arange(kh).reshape(1, 1, 1, 1, -1, 1)
    kj = np.arange(kw).reshape(1, 1, 1, 1, 1, -1)
    full = (c_out, ho, wo, cg_in, kh, kw)
    ci = np.broadcast_to((co // cg_out) * cg_in + cl, full)
    ih = np.broadcast_to(oh * sh - pt + ki * dh, full)
    iw = np.broadcast_to(ow * sw - pl + kj * dw, full)
    rows = np.broadcast_to((co * ho + oh) * wo + ow, full)
    vals = np.broadcast_to(weight[:, None, None, :, :, :], full)
    ok = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)
    cols = (ci * h + ih) * w + iw
    mat = sp.csr_matrix((vals[ok], (rows[ok], cols[ok])), shape=(c_out * ho * wo, c_in * h * w))
    b = np.zeros(c_out) if bias is None else as_f64(bias).reshape(-1)
    if b.shape != (c_out,):
        raise LoadError(f"layer {name}: bias has {b.size} entries but the convolution has {c_out} output channels")
    return Affine(mat, np.repeat(b, ho * wo), name), (c_out, ho, wo)


def elementwise(scale: object, shift: object, in_shape: Sequence[int], name: str) -> Affine:
    """``y = scale * x + shift`` with numpy broadcasting against ``in_shape`` (output keeps ``in_shape``)."""
    in_shape = tuple(in_shape)
    try:
        s = np.broadcast_to(as_f64(scale), in_shape).reshape(-1)
        t = np.broadcast_to(as_f64(shift), in_shape).reshape(-1)
    except ValueError as exc:
        raise LoadError(f"layer {name}: constant of shape {np.shape(scale)} does not broadcast to the input shape {in_shape}") from exc
    return Affine(sp.diags(s, format="csr"), t.copy(), name)


def fold_normalization(ops: list, mean: object, std: object, in_shape: Sequence[int],
                       notes: list[str]) -> tuple[list, Affine | None]:
    """Prepend the input map ``(x - mean) / std`` to ``ops`` when either is given (noting it in ``notes``).

    Returns ``(ops, pre)``; ``pre`` is that map (None without normalization), for the loaders' references.
    """
    if mean is None and std is None:
        return ops, None
    pre = input_normalization(mean, std, in_shape)
    notes.append("input normalization (x - mean) / std folded into the first layer")
    return [pre, *ops], pre


def constant_arith(kind: str, c: np.ndarray, var_first: bool, in_shape: Sequence[int], name: str, where: str) -> Affine:
    """``x + c``, ``x - c`` / ``c - x``, ``x * c`` or ``x / c`` (``kind`` add, sub, mul, div; ``var_first``:
    the activation is the left operand) as an affine layer; ``c`` broadcasts to ``in_shape``."""
    if kind == "add":
        return elementwise(1.0, c, in_shape, name)
    if kind == "sub":
        return elementwise(1.0, -c, in_shape, name) if var_first else elementwise(-1.0, c, in_shape, name)
    if kind == "mul":
        return elementwise(c, 0.0, in_shape, name)
    if not var_first:
        raise LoadError(f"division by the activation at {where} is not affine")
    if np.any(c == 0):
        raise LoadError(f"division by zero at {where}")
    return elementwise(1.0 / c, 0.0, in_shape, name)


def channelwise(scale: np.ndarray, shift: np.ndarray, in_shape: Sequence[int], name: str) -> Affine:
    """Per-channel ``y[c] = scale[c] * x[c] + shift[c]`` on axis 0 of ``in_shape`` (batch norm)."""
    in_shape = tuple(in_shape)
    scale, shift = as_f64(scale).reshape(-1), as_f64(shift).reshape(-1)
    if not in_shape or in_shape[0] != scale.size:
        raise LoadError(f"shape mismatch at layer {name}: {scale.size} channels but the input has shape {in_shape}")
    tail = (1,) * (len(in_shape) - 1)
    return elementwise(scale.reshape(-1, *tail), shift.reshape(-1, *tail), in_shape, name)


def batchnorm(
    mean: object, var: object, weight: object | None, bias: object | None, eps: float, in_shape: Sequence[int], name: str
) -> Affine:
    """Eval-mode batch normalization folded into a per-channel affine map."""
    mean, var = as_f64(mean).reshape(-1), as_f64(var).reshape(-1)
    g = np.ones_like(mean) if weight is None else as_f64(weight).reshape(-1)
    b = np.zeros_like(mean) if bias is None else as_f64(bias).reshape(-1)
    scale = g / np.sqrt(var + float(eps))
    return channelwise(scale, b - mean * scale, in_shape, name)


def permutation(in_shape: Sequence[int], perm: Sequence[int], name: str) -> tuple[Affine, tuple[int, ...]]:
    """Axis permutation (transpose) of a tensor as a 0/1 CSR matrix; returns the map and the new shape."""
    in_shape = tuple(int(s) for s in in_shape)
    if sorted(perm) != list(range(len(in_shape))):
        raise LoadError(f"layer {name}: permutation {tuple(perm)} does not fit a tensor of shape {in_shape}")
    n = int(np.prod(in_shape))
    src = np.arange(n).reshape(in_shape).transpose(perm).reshape(-1)
    mat = sp.csr_matrix((np.ones(n), (np.arange(n), src)), shape=(n, n))
    return Affine(mat, np.zeros(n), name), tuple(in_shape[p] for p in perm)


def is_trivial_permutation(in_shape: Sequence[int], perm: Sequence[int]) -> bool:
    """Whether permuting keeps the row-major order of the data (only size-1 axes move)."""
    big = [p for p in perm if in_shape[p] != 1]
    return big == sorted(big)


def input_normalization(mean: object, std: object, in_shape: Sequence[int], name: str = "normalize") -> Affine:
    """``(x - mean) / std`` with ``mean``/``std`` scalars, per-channel (axis 0) or full-shape arrays."""
    in_shape = tuple(in_shape)
    try:
        m = as_f64(0.0 if mean is None else mean)
        s = as_f64(1.0 if std is None else std)
    except (TypeError, ValueError):
        raise LoadError(f"input normalization: mean and std must be numbers (one, one per channel or one per input); "
                        f"got mean {mean!r}, std {std!r}") from None
    if np.any(s == 0) or not np.all(np.isfinite(s)) or not np.all(np.isfinite(m)):
        raise LoadError(f"input normalization: std must be finite and nonzero and mean finite (mean {m.tolist()}, std {s.tolist()})")

    def fit(a: np.ndarray) -> np.ndarray:
        if a.ndim == len(in_shape) + 1 and a.shape[0] == 1:
            a = a[0]  # a batched broadcast shape such as (1, C, 1, 1)
        if a.ndim == 1 and a.size > 1 and in_shape and a.size == in_shape[0] and len(in_shape) > 1:
            return a.reshape(-1, *(1,) * (len(in_shape) - 1))  # per channel
        if a.size == int(np.prod(in_shape)) and a.size > 1:
            return a.reshape(in_shape)
        return a

    m, s = fit(m), fit(s)
    return elementwise(1.0 / s, -m / s, in_shape, name)
