"""Input sets and output properties.

A :class:`Property` is an input box (an L-infinity ball clipped to the input domain, or a VNN-LIB
box) and an :class:`OutputSpec`: a set of linear *margins* ``m(y) = C y + d`` of the logits ``y``.

Semantics: the property is *violated* at ``x`` when, for some group ``g`` of margin rows, every
margin in ``g`` is ``<= 0`` at ``y = f(x)``; it *holds* when no such ``x`` exists in the box. For
"label beats every other class" each row ``e_label - e_j`` is its own group (a tie counts as a
violation, as in VNN-COMP). A method certifies a group when it proves some margin in the group
stays ``> 0`` on the whole box (sound, possibly conservative for groups of several rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class SpecError(ValueError):
    """The property is malformed (negative eps, wrong sizes, empty box)."""


@dataclass(frozen=True, eq=False)
class InputBox:
    """Axis-aligned box ``lower <= x <= upper``, flattened to ``(in_dim,)``, in the user's input units."""

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise SpecError(f"box bounds must be 1-D of equal shape, got {self.lower.shape} and {self.upper.shape}")
        if not (np.all(np.isfinite(self.lower)) and np.all(np.isfinite(self.upper))):
            raise SpecError("input box must be finite (give the network an input domain)")
        if np.any(self.lower > self.upper):
            raise SpecError("input box is empty (the ball does not meet the input domain)")

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (self.lower + self.upper)

    @property
    def radius(self) -> np.ndarray:
        return 0.5 * (self.upper - self.lower)

    def contains(self, x: np.ndarray, tol: float = 0.0) -> bool:
        """Whether ``x`` (shape ``(dim,)``) lies in the box, up to ``tol``."""
        x = np.asarray(x, dtype=np.float64).ravel()
        return bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol))


@dataclass(frozen=True, eq=False)
class OutputSpec:
    """Margins ``C y + d`` (``C``: ``(m, n_out)``, ``d``: ``(m,)``) grouped as described in the module doc."""

    C: np.ndarray
    d: np.ndarray
    groups: tuple[tuple[int, ...], ...]
    label: int | None = None

    def __post_init__(self) -> None:
        if self.C.ndim != 2 or self.d.shape != (self.C.shape[0],):
            raise SpecError(f"margin matrix shapes do not match: C {self.C.shape}, d {self.d.shape}")
        if not (np.all(np.isfinite(self.C)) and np.all(np.isfinite(self.d))):
            raise SpecError("the output spec has non-finite entries in C or d")
        rows = sorted(i for g in self.groups for i in g)
        if rows != list(range(self.C.shape[0])):
            raise SpecError("groups must partition the margin rows")

    @property
    def n_margins(self) -> int:
        return int(self.C.shape[0])

    def margins(self, logits: np.ndarray) -> np.ndarray:
        """Margins for logits of shape ``(N, n_out)`` -> ``(N, m)``."""
        return np.asarray(logits, dtype=np.float64) @ self.C.T + self.d

    def violated(self, logits: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: whether each logit vector is a counterexample."""
        m = self.margins(np.atleast_2d(logits))
        return np.array([any(np.all(row[list(g)] <= 0.0) for g in self.groups) for row in m])

    def certified_groups(self, margin_lower: np.ndarray) -> np.ndarray:
        """Given sound lower bounds ``(m,)`` on each margin, which groups are proven safe."""
        return np.array([bool(np.any(margin_lower[list(g)] > 0.0)) for g in self.groups])

    def holds(self, margin_lower: np.ndarray) -> bool:
        """Whether lower bounds ``(m,)`` prove the whole property."""
        return bool(np.all(self.certified_groups(margin_lower)))


@dataclass(frozen=True, eq=False)
class Property:
    """An input box and an output spec, with the clean input it came from (if any)."""

    box: InputBox
    output: OutputSpec
    center: np.ndarray | None = None
    eps: float | None = None


def linf_ball(x: np.ndarray, eps: float, domain_lower: np.ndarray, domain_upper: np.ndarray) -> InputBox:
    """L-infinity ball of radius ``eps`` (in the input's own units) around ``x`` intersected with the domain.

    ``x`` is flattened; ``domain_lower/upper`` are ``(in_dim,)``.
    """
    if not np.isfinite(eps) or eps < 0:
        raise SpecError(f"eps must be a finite number >= 0, got {eps}")
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.shape != domain_lower.shape:
        raise SpecError(f"input has {x.size} values but the network expects {domain_lower.size}")
    lo = np.maximum(x - eps, domain_lower)
    hi = np.minimum(x + eps, domain_upper)
    if np.any(lo > hi):
        raise SpecError("the eps-ball around the input does not meet the input domain")
    return InputBox(lo, hi)


def eps_covers_domain(eps: float, domain_lower: np.ndarray, domain_upper: np.ndarray) -> bool:
    """Whether every eps-ball around a point of the (bounded) domain, clipped to it, is the whole domain:
    ``eps >= max_i (upper_i - lower_i)``. Such an eps is valid but asks about every input at once."""
    width = np.asarray(domain_upper, dtype=np.float64) - np.asarray(domain_lower, dtype=np.float64)
    return bool(width.size and np.all(np.isfinite(width)) and eps >= float(np.max(width)))


def domain_notice(eps_values: Sequence[float], domain_lower: np.ndarray, domain_upper: np.ndarray) -> str | None:
    """One line for the eps values that make the ball the whole input domain (None when there are none)."""
    big = [e for e in eps_values if eps_covers_domain(e, domain_lower, domain_upper)]
    if not big:
        return None
    lo, hi = np.asarray(domain_lower, dtype=np.float64), np.asarray(domain_upper, dtype=np.float64)
    where = f"[{lo.flat[0]:g}, {hi.flat[0]:g}]" if np.all(lo == lo.flat[0]) and np.all(hi == hi.flat[0]) \
        else f"widest side {float(np.max(hi - lo)):g}"
    return (f"eps {', '.join(f'{e:g}' for e in big)} is at least the width of the input domain {where}: the ball, "
            "clipped to the domain, is the whole domain (every input of the domain is checked)")


def robustness_spec(label: int, n_classes: int) -> OutputSpec:
    """Margins ``y_label - y_j`` for every ``j != label``, each its own group."""
    if not 0 <= label < n_classes:
        raise SpecError(f"label {label} out of range for {n_classes} classes")
    others = [j for j in range(n_classes) if j != label]
    C = np.zeros((len(others), n_classes))
    for r, j in enumerate(others):
        C[r, label] = 1.0
        C[r, j] = -1.0
    return OutputSpec(C, np.zeros(len(others)), tuple((r,) for r in range(len(others))), label)


def robustness_property(x: np.ndarray, label: int, eps: float, net_domain: tuple[np.ndarray, np.ndarray], n_classes: int) -> Property:
    """Robustness of ``label`` on the eps-ball around ``x`` (clipped to ``net_domain``)."""
    box = linf_ball(x, eps, *net_domain)
    return Property(box, robustness_spec(label, n_classes), np.asarray(x, dtype=np.float64).ravel(), float(eps))
