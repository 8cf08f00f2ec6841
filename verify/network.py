"""Constraint form of a ReLU network: a chain of affine maps with ReLUs between them, in float64.

Everything downstream (bounds, LP, SDP, MILP, attack) consumes only :class:`Network`.

Conventions
-----------
* Inputs are flattened row-major to ``in_dim = prod(input_shape)`` values, in the *user's* units
  (e.g. pixels in [0, 1]); any input normalization of the source model is folded into the first
  affine map, so eps is always measured in those units.
* ``layers[i]`` maps ``z_i -> W_i z_i + b_i``; a ReLU follows every layer except the last, whose
  output is the logits. ``W_i`` has shape ``(out, in)`` and is a dense ``np.ndarray`` or, for
  unrolled convolutions, a ``scipy.sparse`` CSR matrix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np
import scipy.sparse as sp
import torch

Matrix = Union[np.ndarray, sp.csr_matrix, sp.csr_array]


class NetworkError(ValueError):
    """The network is malformed (shapes do not chain, NaN/Inf weights, empty)."""


@dataclass(frozen=True, eq=False)
class Affine:
    """``y = W x + b`` with ``W`` of shape ``(out, in)`` and ``b`` of shape ``(out,)``, float64."""

    weight: Matrix
    bias: np.ndarray
    name: str = ""

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    def dense_weight(self) -> np.ndarray:
        """The weight as a dense float64 array of shape ``(out, in)``."""
        w = self.weight
        return np.asarray(w.toarray() if sp.issparse(w) else w, dtype=np.float64)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Apply to a batch ``x`` of shape ``(N, in)``; returns ``(N, out)``."""
        return np.asarray(self.weight @ x.T).T + self.bias


@dataclass(frozen=True)
class ReLU:
    """Marker used while building a network from a sequence of operations."""

    name: str = ""


@dataclass(frozen=True, eq=False)
class Network:
    """A ReLU network in constraint form.

    Attributes:
        layers: affine maps; ReLU between consecutive ones, none after the last.
        input_shape: shape of one input as the source model expects it, e.g. ``(1, 28, 28)``.
        domain_lower, domain_upper: the valid input box, flattened to ``(in_dim,)`` (may be +-inf).
        name: a label for reports.
    """

    layers: tuple[Affine, ...]
    input_shape: tuple[int, ...]
    domain_lower: np.ndarray
    domain_upper: np.ndarray
    name: str = "network"
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _validate(self)

    # --- construction -------------------------------------------------------------------
    @staticmethod
    def from_ops(
        ops: Sequence[Affine | ReLU],
        input_shape: Sequence[int],
        domain: tuple[float, float] | tuple[np.ndarray, np.ndarray] = (0.0, 1.0),
        name: str = "network",
        notes: Sequence[str] = (),
    ) -> "Network":
        """Build from a sequence of Affine and ReLU ops, merging consecutive affine maps.

        The sequence must start with an Affine and end with an Affine (the logits). Two ReLUs in a
        row are one ReLU. Raises :class:`NetworkError` otherwise.
        """
        layers: list[Affine] = []
        pending: Affine | None = None
        for pos, op in enumerate(ops):
            if isinstance(op, Affine):
                pending = op if pending is None else compose(pending, op)
            elif isinstance(op, ReLU):
                if pending is None:
                    if not layers:
                        raise NetworkError(f"op {pos} ({op.name or 'ReLU'}): network starts with a ReLU")
                    continue
                layers.append(pending)
                pending = None
            else:
                raise NetworkError(f"op {pos}: unknown op type {type(op).__name__}")
        if pending is None:
            raise NetworkError("network must end with an affine (linear/conv) layer producing the logits")
        layers.append(pending)
        in_dim = int(np.prod(input_shape))
        try:
            lo, hi = domain
            lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (in_dim,)).copy()
            hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (in_dim,)).copy()
        except (TypeError, ValueError):
            raise NetworkError(f"input domain must be (lower, upper), numbers or arrays of {in_dim} numbers; got {domain!r}") from None
        return Network(tuple(layers), tuple(int(s) for s in input_shape), lo, hi, name, tuple(notes))

    # --- sizes --------------------------------------------------------------------------
    @property
    def in_dim(self) -> int:
        return self.layers[0].in_dim

    @property
    def out_dim(self) -> int:
        return self.layers[-1].out_dim

    @property
    def hidden_dims(self) -> tuple[int, ...]:
        return tuple(layer.out_dim for layer in self.layers[:-1])

    # --- evaluation ---------------------------------------------------------------------
    def forward(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Logits for a batch.

        ``x`` is ``(N, in_dim)``, ``(N, *input_shape)`` or a single ``(in_dim,)``/``input_shape``
        input, numpy or torch. Returns ``(N, out_dim)`` (or ``(out_dim,)`` for a single input) of the
        same kind; numpy evaluates in float64, torch in the tensor's dtype and device.
        """
        single = _is_single(x, self.input_shape, self.in_dim)
        if isinstance(x, torch.Tensor):
            h = x.reshape(1 if single else x.shape[0], self.in_dim)
            for i, (w, b) in enumerate(self.torch_chain(h.dtype, h.device)):
                h = h @ w.T + b
                if i < len(self.layers) - 1:
                    h = torch.relu(h)
        else:
            h = np.asarray(x, dtype=np.float64).reshape(1 if single else -1, self.in_dim)
            for i, layer in enumerate(self.layers):
                h = layer.apply(h)
                if i < len(self.layers) - 1:
                    h = np.maximum(h, 0.0)
        return h[0] if single else h

    def torch_chain(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The layers as dense torch ``(W, b)`` pairs, ``W`` of shape ``(out, in)``."""
        key = (dtype, str(device))
        cache = self.__dict__.setdefault("_torch_cache", {})
        if key not in cache:
            cache[key] = [
                (
                    torch.as_tensor(layer.dense_weight(), dtype=dtype, device=device),
                    torch.as_tensor(layer.bias, dtype=dtype, device=device),
                )
                for layer in self.layers
            ]
        return cache[key]

    def digest(self) -> str:
        """A short SHA-256 of the weights, biases and domain (for reports and resume)."""
        h = hashlib.sha256()
        for layer in self.layers:
            h.update(np.ascontiguousarray(layer.dense_weight()).tobytes())
            h.update(np.ascontiguousarray(layer.bias).tobytes())
        h.update(self.domain_lower.tobytes())
        h.update(self.domain_upper.tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        """e.g. ``'784-200-100-50-10'``."""
        return "-".join(str(d) for d in (self.in_dim, *self.hidden_dims, self.out_dim))


def compose(first: Affine, second: Affine) -> Affine:
    """The affine map ``second(first(x))``."""
    if second.in_dim != first.out_dim:
        raise NetworkError(
            f"shape mismatch: {second.name or 'layer'} expects {second.in_dim} inputs "
            f"but {first.name or 'previous layer'} produces {first.out_dim}"
        )
    w2 = second.weight
    w = w2 @ first.weight
    if sp.issparse(w):
        w = sp.csr_matrix(w) if w.nnz < 0.3 * w.shape[0] * w.shape[1] else w.toarray()
    b = np.asarray(w2 @ first.bias).ravel() + second.bias
    name = "+".join(n for n in (first.name, second.name) if n)
    return Affine(np.asarray(w) if not sp.issparse(w) else w, b, name)


def _validate(net: Network) -> None:
    if not net.layers:
        raise NetworkError("network has no layers")
    for i, layer in enumerate(net.layers):
        label = layer.name or f"layer {i}"
        if layer.out_dim < 1 or layer.in_dim < 1:
            raise NetworkError(f"{label} (position {i}) is empty: weight of shape {tuple(layer.weight.shape)}")
        if layer.bias.shape != (layer.out_dim,):
            raise NetworkError(f"{label}: bias shape {layer.bias.shape} != ({layer.out_dim},)")
        data = layer.weight.data if sp.issparse(layer.weight) else layer.weight
        if not (np.all(np.isfinite(data)) and np.all(np.isfinite(layer.bias))):
            raise NetworkError(f"{label} (position {i}) has NaN or Inf weights")
        if i and layer.in_dim != net.layers[i - 1].out_dim:
            raise NetworkError(
                f"shape mismatch at {label} (position {i}): expects {layer.in_dim} inputs, "
                f"previous layer produces {net.layers[i - 1].out_dim}"
            )
    if int(np.prod(net.input_shape)) != net.in_dim:
        raise NetworkError(f"input shape {net.input_shape} does not match first layer's {net.in_dim} inputs")
    if net.domain_lower.shape != (net.in_dim,) or net.domain_upper.shape != (net.in_dim,):
        raise NetworkError("domain bounds must have shape (in_dim,)")
    if np.any(net.domain_lower > net.domain_upper):
        raise NetworkError("input domain is empty (lower > upper)")


def _is_single(x: np.ndarray | torch.Tensor, input_shape: tuple[int, ...], in_dim: int) -> bool:
    shape = tuple(x.shape)
    return shape == (in_dim,) or shape == tuple(input_shape)
