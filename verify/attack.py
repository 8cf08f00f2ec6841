"""Projected gradient descent (PGD) attacks: one property (method "attack") and a batched trainer helper.

The property attack minimizes the worst-case margin ``W(x) = min_g max_{i in g} m_i(x)`` (the
property is violated exactly when ``W(x) <= 0``) from several starts inside the input box: the
clean point first, then uniform random points; for specs with few groups each start is also run
once per group, minimizing that group's ``max_i m_i``. A candidate is clipped into the box in
float64 and re-evaluated with the *reference* model before FALSIFIED is reported.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from verify.network import Network
from verify.options import Options
from verify.results import MethodResult, SolverStatus, Verdict
from verify.spec import OutputSpec, Property, SpecError

log = logging.getLogger(__name__)

Reference = Callable[[np.ndarray], np.ndarray]
Model = Sequence[tuple[Tensor, Tensor]] | Callable[[Tensor], Tensor]

#: specs with at most this many groups get one targeted run per group and start
MAX_TARGETED_GROUPS = 16
#: how many of the best candidates are re-checked with the reference model at the end
N_CANDIDATES = 8


def pgd_attack(
    net: Network, prop: Property, options: Options, reference: Reference | None = None, starts: np.ndarray | None = None
) -> MethodResult:
    """Search the property's input box for a counterexample.

    Args:
        net: the network in constraint form (its torch chain is attacked, in ``options.dtype``).
        prop: input box and output spec.
        options: ``attack_steps``, ``attack_restarts``, ``attack_step_size`` (relative to eps, or to
            each coordinate's half-width for boxes without an eps), ``seed``, ``device``, ``dtype``.
        reference: the source model, ``(K, in_dim)`` float64 -> logits ``(K, n_out)``; default
            ``net.forward`` in float64.
        starts: extra start points ``(K, in_dim)`` (clipped into the box), e.g. the minimizers of a
            relaxation in branch and bound; they are tried first, then the usual starts.

    Returns:
        FALSIFIED with ``counterexample`` (``(in_dim,)`` float64, inside the box, violating the spec
        per ``reference``) or UNKNOWN. ``bound`` is the smallest worst-case margin that
        ``reference`` gave at a checked point (an upper bound on the true minimum);
        ``margin_bounds`` are that point's margins ``(m,)``. With ``options.compare`` (compare mode) the
        descent runs all its steps after a counterexample, the best point of every group is checked too,
        and ``margin_bounds[i]`` is the smallest value of row ``i`` at any checked point.
    """
    start = time.perf_counter()
    box, spec = prop.box, prop.output
    if box.dim != net.in_dim:
        raise SpecError(f"input box has {box.dim} values but the network expects {net.in_dim}")
    if spec.C.shape[1] != net.out_dim:
        raise SpecError(f"output spec reads {spec.C.shape[1]} logits but the network has {net.out_dim}")
    reference = reference or (lambda x: np.asarray(net.forward(x), dtype=np.float64))
    dtype = torch.float64 if options.dtype == "float64" else torch.float32
    chain = [(w.detach(), b.detach()) for w, b in net.torch_chain(dtype, options.device)]
    gen = torch.Generator(device=options.device).manual_seed(options.seed)
    x, targets = _starts(prop, options, dtype, gen, starts)
    lo, hi = (torch.as_tensor(v, dtype=dtype, device=options.device) for v in (box.lower, box.upper))
    eps = prop.eps if prop.eps is not None else torch.as_tensor(box.radius, dtype=dtype, device=options.device)
    step = options.attack_step_size * eps
    C, d, mask = _spec_tensors(spec, dtype, options.device)
    best_x, best_w = x.clone(), torch.full((x.shape[0],), float("inf"), dtype=dtype, device=x.device)
    checked = _Checker(prop, reference)
    group_best = (x[: len(spec.groups)].clone(), torch.full((len(spec.groups),), float("inf"), dtype=dtype, device=x.device))
    with torch.enable_grad():
        _descend(chain, x, targets, (lo, hi, step), (C, d, mask), options.attack_steps, (best_x, best_w), checked,
                 group_best if options.compare else None)
    if checked.found is None or options.compare:
        order = torch.argsort(best_w)[:N_CANDIDATES]
        checked.try_points(best_x[order])
    if options.compare:
        checked.try_points(group_best[0])
    return checked.result(time.perf_counter() - start, per_row=options.compare)


def _descend(
    chain: Model,
    x: Tensor,
    targets: Tensor,
    box_step: tuple[Tensor, Tensor, Tensor | float],
    spec_t: tuple[Tensor, Tensor, Tensor],
    steps: int,
    best: tuple[Tensor, Tensor],
    checked: "_Checker",
    group_best: tuple[Tensor, Tensor] | None = None,
) -> None:
    """Signed-gradient steps on each point's objective; updates ``best`` in place; stops on a checked hit,
    unless ``group_best`` (compare mode) is given: then every step is taken and ``group_best`` keeps, per
    group ``g``, the point ``(G, d)`` with the smallest ``max_{i in g} m_i`` and that value ``(G,)``."""
    lo, hi, step = box_step
    C, d, mask = spec_t
    best_x, best_w = best
    for it in range(steps + 1):
        x.requires_grad_(True)
        group_max = _group_max(_logits(chain, x) @ C.T + d, mask)
        worst = group_max.min(dim=1).values
        better = worst.detach() < best_w
        best_x[better], best_w[better] = x.detach()[better], worst.detach()[better]
        if group_best is not None:
            value, at = group_max.detach().min(dim=0)
            improved = value < group_best[1]
            group_best[0][improved], group_best[1][improved] = x.detach()[at[improved]], value[improved]
        hits = worst.detach() <= 0
        if bool(hits.any()) and checked.found is None and checked.try_points(x.detach()[hits][:N_CANDIDATES]):
            if group_best is None:
                return
        if it == steps:
            return
        obj = torch.where(targets >= 0, group_max.gather(1, targets.clamp(min=0)[:, None])[:, 0], worst)
        (grad,) = torch.autograd.grad(obj.sum(), x)
        x = torch.minimum(torch.maximum(x.detach() - step * grad.sign(), lo), hi)


class _Checker:
    """Re-evaluates candidates in float64 with the reference model; remembers the best point."""

    def __init__(self, prop: Property, reference: Reference) -> None:
        self.prop, self.reference = prop, reference
        self.found: np.ndarray | None = None
        self.best: tuple[float, np.ndarray, np.ndarray] | None = None  # (worst margin, margins, x)
        self.row_min = np.full(prop.output.n_margins, np.inf)  # smallest value of each margin row seen

    def try_points(self, x: Tensor) -> bool:
        box, spec = self.prop.box, self.prop.output
        pts = np.clip(x.detach().cpu().numpy().astype(np.float64), box.lower, box.upper)
        logits = np.asarray(self.reference(pts), dtype=np.float64).reshape(pts.shape[0], -1)
        if logits.shape[1] != spec.C.shape[1]:
            raise ValueError(f"reference model returned {logits.shape[1]} outputs; the spec expects {spec.C.shape[1]}")
        margins = spec.margins(logits)
        violated = spec.violated(logits)
        inside = np.array([box.contains(p) for p in pts], dtype=bool)
        if inside.any():
            self.row_min = np.fmin(self.row_min, np.nanmin(np.where(inside[:, None], margins, np.inf), axis=0))
        for i in range(pts.shape[0]):
            w = min(max(margins[i, list(g)]) for g in spec.groups)
            if not np.isfinite(w):
                continue
            if self.best is None or w < self.best[0]:
                self.best = (float(w), margins[i], pts[i])
            if violated[i] and box.contains(pts[i]) and self.found is None:
                self.found = pts[i]
                self.best = (float(w), margins[i], pts[i])
        if self.found is None and np.any(violated):
            log.info("attack: candidate(s) violated the spec in torch but not in the reference model")
        return self.found is not None

    def result(self, elapsed: float, per_row: bool = False) -> MethodResult:
        """The attack's result; with ``per_row`` its ``margin_bounds`` are the smallest value of each margin
        row over all checked points (an upper bound on each row's minimum) instead of the best point's."""
        m = self.prop.output.n_margins
        if self.best is None:
            return MethodResult("attack", Verdict.UNKNOWN, float("inf"), np.full(m, np.inf), elapsed,
                                SolverStatus.NOT_APPLICABLE, "no finite point evaluated")
        w, margins, x = self.best
        margins = np.minimum(self.row_min, margins) if per_row else margins
        if self.found is not None:
            return MethodResult("attack", Verdict.FALSIFIED, w, margins, elapsed, SolverStatus.NOT_APPLICABLE,
                                f"counterexample with worst-case margin {w:.6g} (checked on the reference model)",
                                counterexample=self.found.copy())
        return MethodResult("attack", Verdict.UNKNOWN, w, margins, elapsed, SolverStatus.NOT_APPLICABLE,
                            f"no counterexample found; smallest worst-case margin {w:.6g}")


def _starts(prop: Property, options: Options, dtype: torch.dtype, gen: torch.Generator,
            extra: np.ndarray | None = None) -> tuple[Tensor, Tensor]:
    """Start points ``(B, d)`` and their targets ``(B,)`` (a group index, or -1 for the worst case)."""
    box, dev = prop.box, options.device
    lo = torch.as_tensor(box.lower, dtype=dtype, device=dev)
    hi = torch.as_tensor(box.upper, dtype=dtype, device=dev)
    n_starts = max(1, options.attack_restarts)
    first = prop.center if prop.center is not None and box.contains(prop.center) else box.center
    rand = torch.rand((n_starts - 1, box.dim), generator=gen, dtype=dtype, device=dev)
    pts = torch.cat([torch.as_tensor(first, dtype=dtype, device=dev)[None], lo + rand * (hi - lo)])
    if extra is not None and len(extra):
        given = torch.as_tensor(np.clip(np.asarray(extra, dtype=np.float64).reshape(-1, box.dim), box.lower, box.upper),
                                dtype=dtype, device=dev)
        pts = torch.cat([given, pts])
    n_groups = len(prop.output.groups)
    tgt = [-1] + (list(range(n_groups)) if 1 < n_groups <= MAX_TARGETED_GROUPS else [])
    targets = torch.tensor(tgt, device=dev).repeat(pts.shape[0])
    return pts.repeat_interleave(len(tgt), dim=0), targets


def _spec_tensors(spec: OutputSpec, dtype: torch.dtype, device: str) -> tuple[Tensor, Tensor, Tensor]:
    C = torch.as_tensor(spec.C, dtype=dtype, device=device)
    d = torch.as_tensor(spec.d, dtype=dtype, device=device)
    mask = torch.zeros(len(spec.groups), spec.n_margins, dtype=torch.bool, device=device)
    for g, rows in enumerate(spec.groups):
        mask[g, list(rows)] = True
    return C, d, mask


def _group_max(margins: Tensor, mask: Tensor) -> Tensor:
    """``(B, m)`` margins -> ``(B, G)``: the largest margin of each group."""
    neg_inf = torch.tensor(float("-inf"), dtype=margins.dtype, device=margins.device)
    return torch.where(mask[None], margins[:, None, :], neg_inf).max(dim=2).values


def _logits(model: Model, x: Tensor) -> Tensor:
    if callable(model):
        return model(x)
    h = x
    for i, (w, b) in enumerate(model):
        h = h @ w.T + b
        if i < len(model) - 1:
            h = torch.relu(h)
    return h


def pgd_batch(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    lower_domain: float | Tensor,
    upper_domain: float | Tensor,
    steps: int,
    step_size: float | Tensor,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Untargeted L-inf PGD on the margin loss ``max_{j != y} z_j - z_y``, for training loops.

    Args:
        model: a chain ``[(W, b), ...]`` (ReLU between layers) or a callable ``(N, d) -> (N, n_out)``.
        x: clean inputs ``(N, d)``; y: labels ``(N,)`` (int64).
        eps: radius (scalar, ``(N, 1)`` or ``(N, d)``), in input units; lower/upper_domain: valid
            input range (scalar or ``(d,)``); step_size: absolute step, input units.
        restarts: random starts per input; the one with the largest loss is returned.

    Returns:
        ``x_adv`` ``(N, d)`` in ``[max(x-eps, lower), min(x+eps, upper)]``, detached. Gradients are
        taken with respect to the input only (``torch.autograd.grad``), so no ``.grad`` of the
        model's parameters is touched; a chain's tensors are detached.
    """
    if not callable(model):
        model = [(w.detach(), b.detach()) for w, b in model]
    x = x.detach()
    eps, lower_domain, upper_domain = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (eps, lower_domain, upper_domain))
    lo, hi = torch.maximum(x - eps, lower_domain), torch.minimum(x + eps, upper_domain)
    onehot = torch.nn.functional.one_hot(y, _logits(model, x[:1]).shape[1]).to(torch.bool)
    best_x, best_loss = x.clone(), torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
    for _ in range(max(1, restarts)):
        xa = lo + torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) * (hi - lo)
        for it in range(steps + 1):
            with torch.enable_grad():
                xa.requires_grad_(True)
                z = _logits(model, xa)
                loss = z.masked_fill(onehot, float("-inf")).max(dim=1).values - z[onehot]
                better = loss.detach() > best_loss
                best_x[better], best_loss[better] = xa.detach()[better], loss.detach()[better]
                if it == steps:
                    break
                (grad,) = torch.autograd.grad(loss.sum(), xa)
            xa = torch.minimum(torch.maximum(xa.detach() + step_size * grad.sign(), lo), hi)
    return best_x
