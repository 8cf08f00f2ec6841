"""Conversion of single torch layers (``nn.Module`` or TorchScript submodules) to affine/ReLU ops.

A layer is identified by its class name (``type(m).__name__`` or a script module's
``original_name``), so the same code serves eager modules and TorchScript archives.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from verify.load import layers
from verify.load.base import LoadError
from verify.network import Affine, ReLU

Shape = tuple[int, ...]
Ops = list  # list[Affine | ReLU]

DROPPED = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "Identity"}
SUPPORTED = {"Linear", "Conv2d", "ReLU", "Flatten", "BatchNorm1d", "BatchNorm2d", "Unflatten", *DROPPED}


def pair(v: Any) -> tuple[int, int]:
    """``k`` or ``(k, k)`` -> ``(k, k)``."""
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def flatten_shape(shape: Shape, start: int, end: int) -> Shape:
    """Shape after ``torch.flatten(start, end)`` on a batched tensor ``(1, *shape)``, batch removed."""
    full = (1, *shape)
    start, end = start % len(full), end % len(full)
    merged = (*full[:start], int(np.prod(full[start : end + 1])), *full[end + 1 :])
    return tuple(merged[1:]) if start > 0 else (int(np.prod(merged)),)


def conv_pads(m: Any, weight_shape: tuple[int, ...], name: str) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` zero padding of a Conv2d, including ``padding='same'/'valid'``."""
    mode = getattr(m, "padding_mode", "zeros")
    if mode != "zeros":
        raise LoadError(f"layer {name}: Conv2d padding_mode={mode!r} is not supported (only zero padding)")
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0, 0, 0)
        dh, dw = pair(m.dilation)
        th, tw = dh * (weight_shape[2] - 1), dw * (weight_shape[3] - 1)
        return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    ph, pw = pair(pad)
    return (ph, pw, ph, pw)


def convert_leaf(kind: str, m: Any, shape: Shape, name: str, where: str) -> tuple[Ops, Shape]:
    """Ops and output shape for one layer of class ``kind`` applied to an input of ``shape``.

    ``where`` is the position text used in errors, e.g. ``"position 3 (features.3)"``.
    """
    handler = _HANDLERS.get(kind)
    if handler is None:
        if kind in DROPPED:
            return [], shape
        raise LoadError(
            f"unsupported layer {kind} at {where}; supported: Linear, Conv2d, ReLU, Flatten, BatchNorm1d/2d, "
            "Dropout, Identity and input normalization"
        )
    return handler(m, shape, name)


def _linear(m: Any, shape: Shape, name: str) -> tuple[Ops, Shape]:
    aff, out = layers.dense(m.weight, getattr(m, "bias", None), shape, name)
    return [aff], out


def _conv(m: Any, shape: Shape, name: str) -> tuple[Ops, Shape]:
    w = m.weight
    aff, out = layers.conv2d(
        w, getattr(m, "bias", None), shape, pair(m.stride), conv_pads(m, tuple(w.shape), name), pair(m.dilation), int(m.groups), name
    )
    return [aff], out


def _relu(m: Any, shape: Shape, name: str) -> tuple[Ops, Shape]:
    return [ReLU(name)], shape


def _flatten(m: Any, shape: Shape, name: str) -> tuple[Ops, Shape]:
    return [], flatten_shape(shape, int(getattr(m, "start_dim", 1)), int(getattr(m, "end_dim", -1)))


def _unflatten(m: Any, shape: Shape, name: str) -> tuple[Ops, Shape]:
    dim = int(m.dim) % (len(shape) + 1)
    if dim == 0:
        raise LoadError(f"layer {name}: Unflatten of the batch dimension is not supported")
    sizes = tuple(int(s) for s in m.unflattened_size)
    return [], (*shape[: dim - 1], *sizes, *shape[dim:])


def _batchnorm(m: Any, shape: Shape, name: str) -> tuple[Ops, Shape]:
    if getattr(m, "running_mean", None) is None:
        raise LoadError(f"layer {name}: BatchNorm without running statistics (track_running_stats=False) is not supported")
    aff: Affine = layers.batchnorm(
        m.running_mean, m.running_var, getattr(m, "weight", None), getattr(m, "bias", None), float(m.eps), shape, name
    )
    return [aff], shape


_HANDLERS: dict[str, Callable[[Any, Shape, str], tuple[Ops, Shape]]] = {
    "Linear": _linear,
    "Conv2d": _conv,
    "ReLU": _relu,
    "Flatten": _flatten,
    "Unflatten": _unflatten,
    "BatchNorm1d": _batchnorm,
    "BatchNorm2d": _batchnorm,
}


def normalize_like(m: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean, std)`` of an input-normalization layer without children (ERAN / CROWN style), else None."""
    mean, std = getattr(m, "mean", None), getattr(m, "std", None)
    if mean is None or std is None or callable(mean) or callable(std):
        return None
    try:
        return layers.as_f64(mean), layers.as_f64(std)
    except (TypeError, ValueError):
        return None
