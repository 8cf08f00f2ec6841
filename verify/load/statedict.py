"""Architecture guesses for bare state dicts (no code shipped with the weights).

* Only 2-D weights: ``Linear-ReLU-...-Linear`` in key order. The load-time check cannot confirm the
  guess (the reference is built from the same guess), so the result says it is a guess.
* 4-D weights first, then 2-D: ``Conv-ReLU-...-Flatten-Linear-ReLU-...-Linear``. Stride and padding
  are not stored in a state dict. Given the input shape, every *uniform* choice (the same stride
  ``s <= k`` and padding ``p <= k // 2`` for all convolutions, dilation 1) whose flattened output matches
  the first Linear's input size is a candidate; exactly one candidate is used (and reported),
  otherwise the user must pass ``arch``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from verify.load.base import LoadError
from verify.load.layers import conv_output_size

ARCH_HINT = "pass --arch file.py:factory if wrong"


def _key_order(prefix: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.]", prefix)]


def group_layers(sd: Mapping[str, torch.Tensor], what: str) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """``(prefix, weight, bias)`` per layer in key order; anything but weight/bias is a LoadError."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias") or not isinstance(value, torch.Tensor):
            raise LoadError(
                f"{what}: cannot guess the architecture from state dict entry '{key}' (only Linear/Conv2d "
                "weight and bias entries can be guessed); pass arch='file.py:factory' (--arch)"
            )
        groups.setdefault(prefix, {})[leaf] = value
    out = []
    for prefix in sorted(groups, key=_key_order):
        g = groups[prefix]
        if "weight" not in g:
            raise LoadError(f"{what}: state dict layer '{prefix}' has a bias but no weight")
        w, b = g["weight"], g.get("bias")
        if not all(t.is_floating_point() for t in (w, b) if t is not None):
            raise LoadError(f"{what}: state dict layer '{prefix}' has {w.dtype} weights; expected real floating point")
        if b is not None and (w.dim() < 2 or tuple(b.shape) != (w.shape[0],)):
            raise LoadError(f"{what}: state dict layer '{prefix}': bias of shape {tuple(b.shape)} does not fit "
                            f"weight of shape {tuple(w.shape)}")
        out.append((prefix, w, b))
    if not out:
        raise LoadError(f"{what}: the state dict is empty")
    return out


def guess_module(
    sd: Mapping[str, torch.Tensor], input_shape: Sequence[int] | None, what: str
) -> tuple[nn.Sequential, tuple[int, ...], str, list[str]]:
    """Build the guessed module; returns ``(module, input_shape, source, notes)``."""
    layers = group_layers(sd, what)
    dims = [w.dim() for _, w, _ in layers]
    n_conv = sum(1 for d in dims if d == 4)
    if any(d not in (2, 4) for d in dims) or dims[:n_conv] != [4] * n_conv:
        bad = next(p for (p, w, _) in layers if w.dim() not in (2, 4)) if any(d not in (2, 4) for d in dims) else "order"
        raise LoadError(
            f"{what}: cannot guess the architecture (weights must be 4-D convolutions followed by 2-D linear layers; "
            f"problem at '{bad}'); pass arch='file.py:factory' (--arch)"
        )
    if n_conv == len(layers):
        raise LoadError(f"{what}: the state dict has only convolutions (no final Linear layer); pass arch='file.py:factory' (--arch)")
    linears = layers[n_conv:]
    _check_linear_chain(linears, what)
    if n_conv == 0:
        module = nn.Sequential(OrderedDict([("flatten", nn.Flatten()), *_linear_stack(linears)]))
        dims_txt = "-".join(str(d) for d in [linears[0][1].shape[1], *(w.shape[0] for _, w, _ in linears)])
        shape = tuple(input_shape) if input_shape else (int(linears[0][1].shape[1]),)
        source = f"torch state dict (guessed architecture Linear-ReLU-...-Linear {dims_txt}; {ARCH_HINT})"
        return module, shape, source, [f"guessed architecture: Linear-ReLU chain {dims_txt} from the state dict keys; {ARCH_HINT}"]
    return _guess_conv(layers[:n_conv], linears, input_shape, what)


def _check_linear_chain(linears: list, what: str) -> None:
    for (pa, wa, _), (pb, wb, _) in zip(linears, linears[1:]):
        if wb.shape[1] != wa.shape[0]:
            raise LoadError(
                f"{what}: shape mismatch between layers '{pa}' ({wa.shape[0]} outputs) and '{pb}' ({wb.shape[1]} inputs)"
            )


def _name(prefix: str) -> str:
    """A Sequential child name that shows the state dict key (dots are not allowed in names)."""
    return prefix.replace(".", "_") or "layer"


def _linear_stack(linears: list) -> list[tuple[str, nn.Module]]:
    mods: list[tuple[str, nn.Module]] = []
    for i, (_, w, b) in enumerate(linears):
        lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).to(w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
        mods += [(_name(linears[i][0]), lin)] + ([(f"relu_{_name(linears[i][0])}", nn.ReLU())] if i < len(linears) - 1 else [])
    return mods


def _guess_conv(
    convs: list, linears: list, input_shape: Sequence[int] | None, what: str
) -> tuple[nn.Sequential, tuple[int, ...], str, list[str]]:
    if not input_shape or len(input_shape) != 3:
        raise LoadError(
            f"{what}: a convolutional state dict needs the input shape (C, H, W), e.g. input_shape=(1, 28, 28) "
            "(--input-shape 1,28,28), or pass arch='file.py:factory' (--arch)"
        )
    shape = tuple(int(s) for s in input_shape)
    for (pa, wa, _), (pb, wb, _) in zip(convs, convs[1:]):
        if wb.shape[1] != wa.shape[0]:
            raise LoadError(
                f"{what}: shape mismatch between layers '{pa}' ({wa.shape[0]} channels) and '{pb}' ({wb.shape[1]} input channels)"
            )
    if convs[0][1].shape[1] != shape[0]:
        raise LoadError(
            f"{what}: the first convolution '{convs[0][0]}' expects {convs[0][1].shape[1]} channels but input_shape has {shape[0]}"
        )
    target = int(linears[0][1].shape[1])
    found = [(s, p) for s, p in _uniform_candidates(convs) if _flat_size(convs, shape, s, p) == target]
    if len(found) != 1:
        listing = ", ".join(f"stride {s} padding {p}" for s, p in found) or "none"
        raise LoadError(
            f"{what}: cannot infer the convolutions' stride/padding from a state dict (uniform settings whose output "
            f"matches the first Linear's {target} inputs: {listing}); pass arch='file.py:factory' (--arch)"
        )
    s, p = found[0]
    mods: list[tuple[str, nn.Module]] = []
    for prefix, w, b in convs:
        conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=s, padding=p, bias=b is not None).to(w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b)
        mods += [(_name(prefix), conv), (f"relu_{_name(prefix)}", nn.ReLU())]
    mods += [("flatten", nn.Flatten()), *_linear_stack(linears)]
    guess = f"Conv(stride {s}, padding {p})-ReLU x{len(convs)}-Flatten-Linear-ReLU-...-Linear"
    note = (
        f"guessed architecture: {guess}; stride/padding are the only uniform setting whose output matches the first "
        f"Linear's {target} inputs for input shape {shape}, which the load-time check cannot confirm; {ARCH_HINT}"
    )
    return nn.Sequential(OrderedDict(mods)), shape, f"torch state dict (guessed architecture {guess}; {ARCH_HINT})", [note]


def _uniform_candidates(convs: list) -> list[tuple[int, int]]:
    k = min(min(int(w.shape[2]), int(w.shape[3])) for _, w, _ in convs)
    return [(s, p) for s in range(1, k + 1) for p in range(0, k // 2 + 1)]


def _flat_size(convs: list, shape: tuple[int, ...], s: int, p: int) -> int:
    _, h, w = shape
    for _, wt, _ in convs:
        h = conv_output_size(h, int(wt.shape[2]), s, p, p, 1)
        w = conv_output_size(w, int(wt.shape[3]), s, p, p, 1)
        if h < 1 or w < 1:
            return -1
    return int(convs[-1][1].shape[0]) * h * w
