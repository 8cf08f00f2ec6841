"""What a certificate stores so that the checker re-derives its pre-activation bounds itself.

Interval and CROWN bounds need nothing stored: the checker (:mod:`verify.bounds_check`) recomputes
them. Bounds tightened further carry their proof:

* alpha-CROWN (:class:`SlopeProof`): the optimized lower slopes of the back-substitution that gave a
  hidden layer's bounds. Any slope in ``[0, 1]`` gives a valid lower line ``relu(s) >= alpha s``, so
  the checker needs no trust in how they were found; it back-substitutes with them (clipped to
  ``[0, 1]``) on its own, already confirmed bounds of the earlier layers.
* LP-layerwise (:class:`LPProof`): the multipliers of the LPs that tightened a hidden layer's bounds;
  the checker evaluates their Lagrangian on its own confirmed bounds of the earlier layers (any
  multipliers give a valid bound).

:class:`ProvedBounds` is how bounds travel from :func:`verify.bounds.preactivation_bounds` (and the
LP-layerwise tightening) to the relaxations and into their certificates: a sequence of ``(l, u)``
pairs, one per layer, with the proof beside it. Numpy only; nothing here computes a bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence, overload

import numpy as np

Pair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class SlopeProof:
    """Lower slopes that bound hidden layer ``layer``'s neurons ``rows`` by back-substitution.

    The spec rows are ``[I_rows; -I_rows]`` on the layer's pre-activation (lower bounds, then negated
    upper bounds). ``slopes[j]`` is ``(2R, n_j)`` for every earlier layer ``j < layer`` (None: CROWN's
    choice); only the entries of unstable neurons are read.
    """

    layer: int
    rows: np.ndarray
    slopes: tuple[np.ndarray | None, ...]


@dataclass(frozen=True, eq=False)
class LPProof:
    """Multipliers of the triangle LPs that bound hidden layer ``layer``'s neurons ``rows``.

    The LPs are over layers ``0..layer`` with objective rows ``[I_rows; -I_rows]`` on the layer's
    pre-activation; ``lam, alpha, beta, gamma`` hold one ``(2R, n_j)`` array per earlier layer ``j``
    (see :mod:`verify.lp_dual` for their meaning).
    """

    layer: int
    rows: np.ndarray
    lam: tuple[np.ndarray, ...]
    alpha: tuple[np.ndarray, ...]
    beta: tuple[np.ndarray, ...]
    gamma: tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class BoundsProof:
    """How a set of pre-activation bounds was made: ``source`` (for people) and the tightening ``steps``
    the checker replays, in order, layer by layer."""

    source: str = "crown"
    steps: tuple[SlopeProof | LPProof, ...] = ()

    def for_layer(self, k: int) -> tuple[SlopeProof | LPProof, ...]:
        """The steps that tighten hidden layer ``k``."""
        return tuple(s for s in self.steps if s.layer == k)

    def extended(self, *steps: SlopeProof | LPProof, source: str | None = None) -> "BoundsProof":
        """A copy with more steps (and optionally another source name)."""
        return BoundsProof(self.source if source is None else source, self.steps + tuple(steps))


@dataclass(frozen=True, eq=False)
class ProvedBounds(Sequence[Pair]):
    """Pre-activation bounds ``(l_k, u_k)`` per layer (the last may be the logits) with their proof."""

    layers: tuple[Pair, ...]
    proof: BoundsProof = field(default_factory=BoundsProof)

    @overload
    def __getitem__(self, i: int) -> Pair: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[Pair, ...]: ...

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.layers)


def proof_of(bounds: object, default: str = "given") -> BoundsProof:
    """The proof that travels with ``bounds`` (a :class:`ProvedBounds`), else an empty one named ``default``:
    the checker then only re-derives interval and CROWN bounds and keeps the given ones where they are looser."""
    return bounds.proof if isinstance(bounds, ProvedBounds) else BoundsProof(default)
