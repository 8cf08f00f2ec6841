"""Bounds of many ReLU-split subdomains at once: beta-CROWN in torch.

A subdomain of the input box fixes the sign of some unstable ReLUs: ``z >= 0`` (split +1) or
``z <= 0`` (split -1). Its bound on each margin row is CROWN's back-substitution with

* the root's pre-activation bounds, clamped by the splits (``l = max(l, 0)`` for +1, ``u = min(u, 0)``
  for -1): a split neuron is then exact (identity or zero), valid on the subdomain;
* lower ReLU slopes ``alpha`` in ``[0, 1]`` per domain, row and neuron (any value is sound);
* a Lagrange term ``-beta * sign * z`` per split neuron with ``beta >= 0`` (Wang et al. 2021,
  "Beta-CROWN"): ``-beta z <= 0`` wherever ``z >= 0`` holds, so for *any* ``beta >= 0`` the minimum over
  the whole box of the relaxed objective is below the minimum over the subdomain.

``alpha`` and ``beta`` are optimized by projected Adam in float32; the best ones are then rounded to
the proof's storage grid (``alpha`` to multiples of 1/255, ``beta`` to float32) and the bound is
evaluated once more in float64, together with a rigorous rounding allowance
(:func:`magnitude`). Only that float64 value minus the allowance closes a row; the proof checker
(:mod:`verify.bab.proof_check`) recomputes it independently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

import torch
from torch import Tensor

from verify.bounds.adam import ProjectedAdam
from verify.bounds.crown import backward_lower, relu_relaxation
from verify.rounding import SAFETY, chain_gamma
from verify.rounding import forward_allowance as float_forward_allowance

if TYPE_CHECKING:
    from verify.network import Network
    from verify.spec import InputBox

#: alpha is stored in the proof as ``round(255 alpha)`` (uint8)
ALPHA_LEVELS = 255


@dataclass(frozen=True, eq=False)
class Root:
    """What all subdomains of one property share (ReLU-split mode).

    Attributes:
        chains: ``{dtype: [(W, b), ...]}`` torch copies of the network (float32 and float64).
        lower, upper: the input box, ``(1, in_dim)`` float64; or ``(D, in_dim)``, one box per domain
            (input splitting), with ``bounds`` then ``(D, n_k)``.
        bounds: sound float64 pre-activation bounds of every hidden layer, each ``(1, n_k)``.
        C, d: the margin rows being branched on, ``(R, n_out)`` and ``(R,)`` float64.
        forward_err: ``(R,)`` allowance for the float64 network's own rounding (added to the slack).
    """

    chains: dict
    lower: Tensor
    upper: Tensor
    bounds: list[tuple[Tensor, Tensor]]
    C: Tensor
    d: Tensor
    forward_err: Tensor

    @property
    def n_rows(self) -> int:
        return int(self.C.shape[0])

    @property
    def widths(self) -> list[int]:
        return [int(l.shape[1]) for l, _ in self.bounds]

    def unstable(self) -> list[Tensor]:
        """Per hidden layer, the bool mask ``(n_k,)`` of neurons unstable at the root."""
        return [((l < 0) & (u > 0))[0] for l, u in self.bounds]


@dataclass
class Params:
    """Per-domain relaxation parameters, full width: ``alphas[k]``, ``betas[k]`` are ``(D, R, n_k)``."""

    alphas: list[Tensor]
    betas: list[Tensor]

    def detach(self) -> "Params":
        return Params([a.detach() for a in self.alphas], [b.detach() for b in self.betas])

    def quantized(self) -> "Params":
        """Rounded to the proof's storage grid (alpha: k/255 in [0, 1]; beta: float32, >= 0)."""
        alphas = [torch.round(a.clamp(0.0, 1.0) * ALPHA_LEVELS) / ALPHA_LEVELS for a in self.alphas]
        betas = [b.clamp(min=0.0).to(torch.float32) for b in self.betas]
        return Params(alphas, betas)

    def to(self, dtype: torch.dtype) -> "Params":
        return Params([a.to(dtype) for a in self.alphas], [b.to(dtype) for b in self.betas])


def make_root(net: "Network", box: "InputBox", C: np.ndarray, d: np.ndarray, hidden: list, device: str) -> Root:
    """A :class:`Root` for margin rows ``C``/``d`` with sound float64 hidden-layer bounds ``hidden``."""
    chains = {dt: net.torch_chain(dt, device) for dt in (torch.float32, torch.float64)}
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)  # noqa: E731
    forward = float_forward_allowance(net, box, tuple(u for _, u in hidden), C)
    return Root(chains, t(box.lower)[None], t(box.upper)[None], [(t(l)[None], t(u)[None]) for l, u in hidden],
                t(C), t(d), t(forward))


def domain_bounds(root: Root, splits: list[Tensor], dtype: torch.dtype) -> list[tuple[Tensor, Tensor]]:
    """Root bounds clamped by each domain's splits (``splits[k]``: ``(D, n_k)`` int8 in {-1, 0, 1})."""
    out = []
    for (l, u), s in zip(root.bounds, splits):
        l, u = l.to(dtype), u.to(dtype)
        out.append((torch.where(s > 0, l.clamp(min=0.0), l), torch.where(s < 0, u.clamp(max=0.0), u)))
    return out


def evaluate(
    root: Root, splits: list[Tensor], params: Params, dtype: torch.dtype, trace: list[Tensor] | None = None
) -> Tensor:
    """beta-CROWN lower bounds ``(D, R)`` of the margin rows on each domain (not rounding-safe).

    ``trace`` (optional) receives the backward coefficients, see :func:`verify.bounds.crown.backward_lower`.
    """
    chain = root.chains[dtype]
    bounds = domain_bounds(root, splits, dtype)
    relax = [relu_relaxation(l, u) for l, u in bounds]
    extra = [-b.to(dtype) * s.to(dtype)[:, None, :] for b, s in zip(params.betas, splits)]
    n = splits[0].shape[0] if splits else root.lower.shape[0]
    lo, hi = root.lower.to(dtype).expand(n, -1), root.upper.to(dtype).expand(n, -1)
    C, d = root.C.to(dtype), root.d.to(dtype).expand(n, -1)
    alphas = [a.to(dtype) for a in params.alphas]
    return backward_lower(chain, len(chain) - 1, C, d, bounds, lo, hi, alphas, relax, extra, trace)


def magnitude(root: Root, splits: list[Tensor], params: Params) -> Tensor:
    """Rounding allowance ``(D, R)`` for :func:`evaluate` in float64 with these (quantized) parameters.

    The back-substitution is evaluated once more with every quantity replaced by its absolute value
    (slopes by 1, the upper line's offset by ``|offset|``), giving the sum ``S`` of the magnitudes of all
    terms; the float64 error of the bound is at most ``gamma_K S`` with ``K`` the longest chain of
    roundings (:mod:`verify.rounding`). We return ``2 SAFETY gamma_K S`` (another factor 2 for sign
    decisions taken on rounded coefficients) plus the float64 network's own forward error.
    """
    chain = root.chains[torch.float64]
    bounds = domain_bounds(root, splits, torch.float64)
    n = splits[0].shape[0] if splits else root.lower.shape[0]
    M = root.C.abs().expand(n, -1, -1)
    const = root.d.abs().expand(n, -1).clone()
    for j in range(len(chain) - 1, 0, -1):
        w, b = chain[j]
        const = const + M @ b.abs()
        G = M @ w.abs()
        l, u = bounds[j - 1]
        unstable = (l < 0) & (u > 0)
        offset = torch.where(unstable, u * l.abs() / torch.where(unstable, u - l, torch.ones_like(u)), torch.zeros_like(u))
        const = const + (G @ offset[:, :, None])[..., 0]
        M = G + (params.betas[j - 1].to(torch.float64).abs() * (splits[j - 1] != 0)[:, None, :])
    w, b = chain[0]
    const = const + M @ b.abs()
    xmax = torch.maximum(root.lower.abs(), root.upper.abs())  # (1 or D, in_dim)
    total = const + ((M @ w.abs()) * xmax[:, None, :]).sum(dim=2)
    dims = [int(w.shape[1]) for w, _ in chain] + [int(chain[-1][0].shape[0])]
    return 2.0 * SAFETY * chain_gamma(dims, len(chain)) * total + root.forward_err


def init_params(root: Root, n: int, dtype: torch.dtype = torch.float32) -> Params:
    """CROWN's adaptive slopes and zero betas for ``n`` domains."""
    alphas, betas = [], []
    for l, u in root.bounds:
        a = (u > -l).to(dtype)[:, None, :].expand(n, root.n_rows, -1).clone()
        alphas.append(a)
        betas.append(torch.zeros_like(a))
    return Params(alphas, betas)


@dataclass
class Bounded:
    """Result of :func:`optimize`: checked float64 bounds ``(D, R)`` (value minus allowance), the
    quantized parameters that give them, and the input-space coefficients of the last pass."""

    lower: Tensor
    params: Params
    coeffs: list[Tensor]


def optimize(
    root: Root, splits: list[Tensor], start: Params, open_rows: Tensor, steps: int, lr_alpha: float, lr_beta: float,
    deadline: float | None = None,
) -> Bounded:
    """Optimize ``alpha``/``beta`` of ``D`` domains for ``steps`` Adam steps; keep the best per (domain, row).

    Args:
        splits: per hidden layer ``(D, n_k)`` int8.
        start: initial parameters (e.g. the parent's), full width, float32.
        open_rows: ``(D, R)`` bool, the rows still to be proved (only they drive the optimization).
        deadline: ``time.monotonic()`` value after which no further step is taken.

    Returns:
        :class:`Bounded`; ``lower`` is ``-inf`` where the float64 value is not finite.
    """
    f32 = torch.float32
    alphas = [a.detach().to(f32).clone().requires_grad_() for a in start.alphas]
    betas = [b.detach().to(f32).clone().requires_grad_() for b in start.betas]
    params = Params(alphas, betas)
    weight = open_rows.to(f32)
    best = torch.full(open_rows.shape, -torch.inf, dtype=f32, device=open_rows.device)
    best_params = Params([a.detach().clone() for a in alphas], [b.detach().clone() for b in betas])
    adam = ProjectedAdam([(a, lr_alpha, 0.0, 1.0) for a in alphas] + [(b, lr_beta, 0.0, None) for b in betas])
    for step in range(steps + 1):
        last = step == steps or (deadline is not None and time.monotonic() > deadline)
        with torch.enable_grad() if not last else torch.no_grad():
            val = evaluate(root, splits, params, f32)
            with torch.no_grad():  # the value belongs to the parameters before this step's update
                better = val.detach() > best
                if bool(better.any()):
                    best = torch.where(better, val.detach(), best)
                    for ba, a in zip(best_params.alphas, alphas):
                        ba[better] = a.detach()[better]
                    for bb, b in zip(best_params.betas, betas):
                        bb[better] = b.detach()[better]
            if last or not bool(open_rows.any()) or bool(((best > 0) | ~open_rows).all()):
                break
            (-(val * weight).sum()).backward()
        adam.step()
    return checked_bounds(root, splits, best_params)


def checked_bounds(root: Root, splits: list[Tensor], params: Params) -> Bounded:
    """Float64 bounds of quantized ``params`` minus the rounding allowance, and the input coefficients."""
    q = params.quantized()
    trace: list[Tensor] = []
    with torch.no_grad():
        val = evaluate(root, splits, q, torch.float64, trace)
        lower = val - magnitude(root, splits, q)
    lower = torch.where(torch.isfinite(lower), lower, torch.full_like(lower, -torch.inf))
    return Bounded(lower, q.to(torch.float32), trace)
