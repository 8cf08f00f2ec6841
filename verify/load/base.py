"""Shared pieces of every loader: the error type, the loaded-model record and the load-time check.

Every loader produces a sequence of :class:`~verify.network.Affine` / :class:`~verify.network.ReLU`
ops plus a *reference* function that runs the source runtime (torch, onnxruntime, numpy).
:func:`finish` builds the constraint-form :class:`Network` and compares it with the reference on
random inputs from the domain; a mismatch is a :class:`LoadError`, never a silently wrong network.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from verify.network import Affine, Network, NetworkError, ReLU

log = logging.getLogger(__name__)

Reference = Callable[[np.ndarray], np.ndarray]

N_CHECK = 16  # random inputs used by the load-time check
TOL_FLOAT64 = 1e-8  # relative to max(1, max |logit|)
TOL_FLOAT32 = 1e-4


class LoadError(ValueError):
    """The model file cannot be turned into a ReLU network (one line naming file, layer or op)."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line, whatever text it quotes


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model in constraint form together with the runtime it came from.

    Attributes:
        network: the float64 constraint form.
        reference: ``(N, in_dim)`` float64 inputs in user units -> ``(N, n_out)`` logits computed by
            the source runtime (torch module, TorchScript, onnxruntime or numpy).
        source: a short description of what was loaded and how.
        max_abs_diff: max ``|network.forward - reference|`` found by the load-time check.
        meta: extra information (e.g. a ``'data'`` hint shipped with the model, notes).
    """

    network: Network
    reference: Reference
    source: str
    max_abs_diff: float
    meta: dict = field(default_factory=dict)


def checked_shape(shape: object, what: str) -> tuple[int, ...]:
    """``shape`` (an int or a sequence of ints) as a tuple of positive ints; LoadError otherwise."""
    items = [shape] if isinstance(shape, (int, np.integer)) else shape
    try:
        out = tuple(operator.index(s) for s in items)  # type: ignore[union-attr]
    except TypeError:
        out = ()
    if not out or min(out) < 1:
        raise LoadError(f"{what}: the input shape must be positive integers, e.g. [1, 28, 28]; got {shape!r}")
    return out


def resolve_domain(
    domain: tuple | None, meta: dict | None = None, default: tuple[float, float] = (0.0, 1.0), what: str = "model"
) -> tuple:
    """The input domain: the caller's value, else ``meta['domain']``, else ``default`` (``what`` names the
    file in errors)."""
    if domain is not None:
        return checked_domain(domain, "the input domain")
    if meta and "domain" in meta:
        return checked_domain(meta["domain"], f"{what}: verify_meta 'domain'")
    return default


def checked_domain(domain: object, what: str) -> tuple:
    """``domain`` as ``(lower, upper)``: numbers or arrays, no NaN, lower <= upper; LoadError otherwise."""
    try:
        lo, hi = domain  # type: ignore[misc]
        lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        np.broadcast_shapes(lo_a.shape, hi_a.shape)
    except (TypeError, ValueError):
        raise LoadError(f"{what} must be [lower, upper] (numbers, or arrays of one value per input); got {domain!r}") from None
    if np.any(np.isnan(lo_a)) or np.any(np.isnan(hi_a)) or np.any(lo_a > hi_a):
        raise LoadError(f"{what} is empty or NaN (lower must be <= upper); got {domain!r}")
    return (lo, hi)


def sample_domain(domain: tuple, in_dim: int, n: int = N_CHECK, seed: int = 0) -> np.ndarray:
    """``(n, in_dim)`` random inputs from the domain box (standard normal where a side is infinite)."""
    rng = np.random.default_rng(seed)
    lo = np.broadcast_to(np.asarray(domain[0], dtype=np.float64), (in_dim,))
    hi = np.broadcast_to(np.asarray(domain[1], dtype=np.float64), (in_dim,))
    finite = np.isfinite(lo) & np.isfinite(hi)
    width = np.where(finite, hi - lo, 0.0)
    x = np.where(finite, np.where(finite, lo, 0.0) + rng.uniform(size=(n, in_dim)) * width, rng.normal(size=(n, in_dim)))
    x = np.clip(x, lo, hi)
    return x


def build_network(
    ops: Sequence[Affine | ReLU],
    input_shape: Sequence[int],
    domain: tuple,
    name: str,
    notes: Sequence[str],
    what: str,
) -> Network:
    """``Network.from_ops`` with its :class:`NetworkError` turned into a :class:`LoadError` about ``what``.

    A ReLU after the last affine layer is kept exactly by appending an identity layer (and a note).
    """
    ops = list(ops)
    last = next((op for op in reversed(ops) if isinstance(op, Affine)), None)
    if ops and isinstance(ops[-1], ReLU) and last is not None:
        k = last.out_dim
        ops.append(Affine(np.eye(k), np.zeros(k), "output_identity"))
        notes = [*notes, "ReLU on the outputs kept exact by an identity output layer"]
    try:
        return Network.from_ops(ops, tuple(input_shape), domain, name=name, notes=tuple(notes))
    except NetworkError as exc:
        raise LoadError(f"{what}: {exc}") from exc


def finish(
    ops: Sequence[Affine | ReLU],
    input_shape: Sequence[int],
    reference: Reference,
    *,
    domain: tuple,
    source: str,
    what: str,
    name: str,
    float32: bool,
    notes: Sequence[str] = (),
    meta: dict | None = None,
    strict: Reference | None = None,
) -> LoadedModel:
    """Build the network, run the load-time check against ``reference`` and wrap both.

    ``what`` names the model in error messages (e.g. the file path). ``float32`` selects the
    float32 tolerance when the source runtime computes in float32. ``strict`` is an optional
    float64 evaluation of the same source (e.g. a float64 copy of a torch module), checked at the
    float64 tolerance so that conversion errors cannot hide below float32 rounding.
    """
    net = build_network(ops, input_shape, domain, name, notes, what)
    x = sample_domain(domain, net.in_dim)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as one line
        ours = net.forward(x)
        if strict is not None:
            _compare(ours, _run(strict, x, input_shape, what), TOL_FLOAT64, what)
        diff = _compare(ours, _run(reference, x, input_shape, what), TOL_FLOAT32 if float32 else TOL_FLOAT64, what)
    log.info("loaded %s (%s): max |diff| vs source %.3g", what, source, diff)
    return LoadedModel(net, reference, source, diff, dict(meta or {}))


def _run(reference: Reference, x: np.ndarray, input_shape: Sequence[int], what: str) -> np.ndarray:
    try:
        return np.asarray(reference(x), dtype=np.float64).reshape(x.shape[0], -1)
    except Exception as exc:  # the source runtime itself failed: report it, do not guess
        raise LoadError(f"{what}: the source model failed to run on inputs of shape {tuple(input_shape)}: {exc}") from exc


def _compare(ours: np.ndarray, ref: np.ndarray, rel_tol: float, what: str) -> float:
    """Max |ours - ref|; a LoadError when it exceeds ``rel_tol * max(1, max |ref|)``."""
    if ref.shape != ours.shape:
        raise LoadError(
            f"{what}: the converted network has {ours.shape[1]} outputs but the source model has {ref.shape[1]}"
        )
    if not (np.all(np.isfinite(ours)) and np.all(np.isfinite(ref))):
        raise LoadError(f"{what}: the network's outputs overflow (NaN or Inf) on random inputs of the domain")
    diff = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    tol = rel_tol * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    if not np.isfinite(diff) or diff > tol:
        raise LoadError(
            f"{what}: the converted network does not match the source model (max |difference| {diff:.3g} "
            f"> tolerance {tol:.3g} on {ours.shape[0]} random inputs); the layer order or architecture guess is wrong"
        )
    return diff
