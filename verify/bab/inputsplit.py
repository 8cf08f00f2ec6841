"""Branch and bound by splitting the input box (for inputs of low dimension, e.g. control networks).

Each round pops the boxes with the smallest bound, halves each along the coordinate with the largest
``|coefficient| x width`` of its open rows' linear bounds, and bounds both halves: CROWN
pre-activation bounds of the half (batched), then margin slopes optimized from the parent's. Closures
store slopes for every hidden neuron (the unstable ones differ from box to box); the checker
recomputes each closed box's own pre-activation bounds (:mod:`verify.bab.proof_check`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from verify.bab.bounding import Bounded, Params, Root, init_params, optimize
from verify.bab.proof import ProofBuilder, ProofKind
from verify.bab.search import Groups, Outcome, SearchEnd
from verify.bounds.crown import crown_bounds
from verify.bounds.margins import layer_slack
from verify.budget import Budget
from verify.rounding import forward_allowance as float_forward_allowance
from verify.network import Network
from verify.options import Options
from verify.results import MethodResult, SolverStatus, Verdict, group_bound
from verify.spec import Property

#: bytes of open boxes kept at most
MEMORY_BYTES = 1.0e9


@dataclass
class Boxes:
    """Open boxes: ``lower/upper`` ``(P, in_dim)``, slopes ``(P, R, n_k)`` float16, bounds ``(P, R)``,
    proved groups ``(P, G)``, split scores ``(P, in_dim)``, proof nodes ``(P,)``."""

    lower: Tensor
    upper: Tensor
    alphas: list[Tensor]
    bound: Tensor
    proved: Tensor
    score: Tensor
    node: Tensor

    def __len__(self) -> int:
        return int(self.node.shape[0])

    def take(self, idx: Tensor) -> "Boxes":
        return Boxes(self.lower[idx], self.upper[idx], [a[idx] for a in self.alphas], self.bound[idx], self.proved[idx],
                     self.score[idx], self.node[idx])

    def cat(self, o: "Boxes") -> "Boxes":
        c = torch.cat
        return Boxes(c([self.lower, o.lower]), c([self.upper, o.upper]), [c([a, b]) for a, b in zip(self.alphas, o.alphas)],
                     c([self.bound, o.bound]), c([self.proved, o.proved]), c([self.score, o.score]), c([self.node, o.node]))

    def nbytes(self) -> int:
        ts = [self.lower, self.upper, *self.alphas, self.bound, self.proved, self.score, self.node]
        return int(sum(t.numel() * t.element_size() for t in ts))


def input_split_bab(net: Network, prop: Property, options: Options, falsifier, budget: Budget, t0: float) -> MethodResult:  # type: ignore[no-untyped-def]
    """Method "bab" by input splitting; returns CERTIFIED only with a proof that checks."""
    from verify.bab.method import checked_result

    spec, box, dev = prop.output, prop.box, options.device
    run = _Run(net, prop, options, budget)
    lo = torch.as_tensor(box.lower, dtype=torch.float64, device=dev)[None]
    hi = torch.as_tensor(box.upper, dtype=torch.float64, device=dev)[None]
    root_node = torch.zeros(1, dtype=torch.long, device=dev)
    proved0 = torch.zeros(1, len(spec.groups), dtype=torch.bool, device=dev)
    pool, cex = run.bound(lo, hi, None, torch.full((1, spec.n_margins), -torch.inf, dtype=torch.float64, device=dev),
                          proved0, root_node, falsifier, steps=options.alpha_steps)
    end = SearchEnd.PROVED
    while cex is None and len(pool):
        if budget.expired():
            end = SearchEnd.TIMEOUT
            break
        if pool.nbytes() > MEMORY_BYTES:
            end = SearchEnd.MEMORY
            break
        obj = run.groups.objective(pool.bound, pool.proved)
        idx = torch.topk(-obj, min(len(pool), options.bab_batch)).indices
        keep = torch.ones(len(pool), dtype=torch.bool, device=dev)
        keep[idx] = False
        batch, pool = pool.take(idx), pool.take(torch.nonzero(keep).flatten())
        children, cex = run.split(batch, falsifier)
        pool = pool.cat(children)
    elapsed = time.perf_counter() - t0
    m = spec.n_margins
    if cex is not None:
        margins = spec.margins(net.forward(cex[None]))[0]
        return MethodResult("bab", Verdict.FALSIFIED, group_bound(spec.groups, margins), margins, elapsed,
                            SolverStatus.NOT_APPLICABLE, f"counterexample found after {run.domains} boxes", counterexample=cex)
    rows = run.row_lower.cpu().numpy()
    if len(pool):
        rows = np.minimum(rows, pool.bound.min(dim=0).values.cpu().numpy())
    outcome = Outcome(end, None, run.finished_lower, rows, run.domains, len(pool), run.rounds)
    if end is SearchEnd.PROVED:
        proof = run.proof.build(net.digest(), box.lower, box.upper, spec.C, spec.d, spec.groups,
                                tuple(np.zeros(0, np.int64) for _ in net.hidden_dims))
        return checked_result(net, prop, proof, rows, outcome, t0, f"{run.domains} boxes")
    glob = min(run.finished_lower, float(run.groups.values(pool.bound).min(dim=1).values.min()) if len(pool) else np.inf)
    status = SolverStatus.TIME_LIMIT if end is SearchEnd.TIMEOUT else SolverStatus.ITERATION_LIMIT
    return MethodResult("bab", Verdict.UNKNOWN, glob, rows if m else rows, elapsed, status,
                        f"{end.message}: {run.domains} boxes bounded, {len(pool)} still open",
                        extra={"domains": run.domains, "rounds": run.rounds, "open_domains": len(pool)})


class _Run:
    def __init__(self, net: Network, prop: Property, options: Options, budget: Budget) -> None:
        from verify.bab.method import settings_from

        spec, dev = prop.output, options.device
        self.net, self.prop, self.options, self.budget = net, prop, options, budget
        self.settings = settings_from(options)
        self.chains = {dt: net.torch_chain(dt, dev) for dt in (torch.float32, torch.float64)}
        self.C = torch.as_tensor(spec.C, dtype=torch.float64, device=dev)
        self.d = torch.as_tensor(spec.d, dtype=torch.float64, device=dev)
        self.groups = Groups(list(spec.groups), spec.n_margins, torch.device(dev))
        self.proof = ProofBuilder(ProofKind.INPUT_SPLIT, int(sum(net.hidden_dims)))
        lo = torch.as_tensor(prop.box.lower, dtype=torch.float64, device=dev)[None]
        hi = torch.as_tensor(prop.box.upper, dtype=torch.float64, device=dev)[None]
        hidden = self._hidden(lo, hi)
        uppers = tuple(u[0].cpu().numpy() for _, u in hidden)
        self.forward_err = torch.as_tensor(float_forward_allowance(net, prop.box, uppers, spec.C), device=dev)
        self.row_lower = torch.full((spec.n_margins,), torch.inf, dtype=torch.float64, device=dev)
        self.finished_lower = float("inf")
        self.domains = 0
        self.rounds = 0

    def _hidden(self, lo: Tensor, hi: Tensor) -> list[tuple[Tensor, Tensor]]:
        chain = self.chains[torch.float64]
        L = len(chain) - 1
        if L == 0:
            return []
        with torch.no_grad():
            bounds = crown_bounds(chain, lo, hi, n_layers=L, all_rows=True)
            slack = layer_slack(chain[:L], lo, hi)
        return [(l - s, u + s) for (l, u), s in zip(bounds, slack)]

    def bound(self, lo: Tensor, hi: Tensor, alphas: list[Tensor] | None, parent_bound: Tensor, proved: Tensor,
              nodes: Tensor, falsifier, steps: int) -> tuple[Boxes, np.ndarray | None]:  # type: ignore[no-untyped-def]
        """Bound boxes ``(D, in_dim)``; record closures; return the open ones and a counterexample if any."""
        root = Root(self.chains, lo, hi, self._hidden(lo, hi), self.C, self.d, self.forward_err)
        n = lo.shape[0]
        params = init_params(root, n)
        if alphas is not None:
            params = Params([a.to(torch.float32) for a in alphas], params.betas)
        splits = [torch.zeros(n, w, dtype=torch.int8, device=lo.device) for w in root.widths]
        bounded = optimize(root, splits, params, self.groups.open_rows(proved), steps,
                           self.settings.lr_alpha, self.settings.lr_beta, self.budget.deadline)
        self.domains += n
        bound = torch.maximum(parent_bound, bounded.lower)
        proved = self._close(bounded, proved, nodes)
        cex = falsifier.points(self._minimizers(bounded, lo, hi, proved, bound))
        coeff = bounded.coeffs[-1]  # (D, R, in_dim)
        score = ((coeff.abs() * self.groups.open_rows(proved)[:, :, None]).sum(dim=1) * (hi - lo)).to(torch.float32)
        boxes = Boxes(lo, hi, [a.to(torch.float16) for a in bounded.params.alphas], bound, proved, score, nodes)
        obj = self.groups.objective(bound, proved)
        done = torch.isinf(obj) & (obj > 0)
        if bool(done.any()):
            self.finished_lower = min(self.finished_lower, float(self.groups.values(bound[done]).min(dim=1).values.min()))
            self.row_lower = torch.minimum(self.row_lower, bound[done].min(dim=0).values)
        return boxes.take(torch.nonzero(~done).flatten()), cex

    def split(self, batch: Boxes, falsifier) -> tuple[Boxes, np.ndarray | None]:  # type: ignore[no-untyped-def]
        """Halve every box of ``batch`` along its best-scoring coordinate and bound the halves."""
        self.rounds += 1
        dim = batch.score.argmax(dim=1)
        rows = torch.arange(len(batch), device=dim.device)
        mid = (batch.lower[rows, dim] + batch.upper[rows, dim]) / 2
        minus, plus = self.proof.add_children(batch.node.cpu().numpy(), np.zeros(len(batch), np.int64),
                                              dim.cpu().numpy(), mid.cpu().numpy())
        lo = torch.cat([batch.lower, batch.lower])
        hi = torch.cat([batch.upper, batch.upper])
        n = len(batch)
        hi[rows, dim] = mid
        lo[rows + n, dim] = mid
        nodes = torch.as_tensor(np.concatenate([minus, plus]), device=lo.device)
        alphas = [torch.cat([a, a]) for a in batch.alphas]
        return self.bound(lo, hi, alphas, torch.cat([batch.bound, batch.bound]), torch.cat([batch.proved, batch.proved]),
                          nodes, falsifier, self.settings.steps)

    def _close(self, bounded: Bounded, proved: Tensor, nodes: Tensor) -> Tensor:
        newly = (bounded.lower > 0) & self.groups.open_rows(proved)
        grp = self.groups.member[None] & newly[:, None, :]
        first = grp.to(torch.int8).argmax(dim=2)
        has = grp.any(dim=2)
        dom, g = torch.nonzero(has, as_tuple=True)
        if dom.numel():
            rows = first[dom, g]
            alphas = torch.cat([a[dom, rows] for a in bounded.params.alphas], dim=1) if bounded.params.alphas else \
                torch.zeros(dom.numel(), 0)
            alpha_u8 = torch.round(alphas.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
            self.proof.add_closures(nodes[dom].cpu().numpy(), rows.cpu().numpy(), alpha_u8,
                                    [np.zeros(0, np.float32)] * dom.numel())
        return proved | has

    def _minimizers(self, bounded: Bounded, lo: Tensor, hi: Tensor, proved: Tensor, bound: Tensor) -> np.ndarray:
        coeff = bounded.coeffs[-1]
        open_rows = self.groups.open_rows(proved)
        worst = torch.where(open_rows, bound, torch.full_like(bound, torch.inf)).argmin(dim=1)
        alive = open_rows.any(dim=1)
        a = coeff[torch.arange(coeff.shape[0], device=coeff.device), worst]
        return torch.where(a > 0, lo, hi)[alive].cpu().numpy()
