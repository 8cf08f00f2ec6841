"""Best-first branch and bound over ReLU splits, batched, with falsification inside the search.

Each round pops the open domains with the smallest bound, picks one unstable neuron per domain
(:mod:`verify.bab.branching`), bounds both children at once (:func:`verify.bab.bounding.optimize`,
warm-started from the parent), records a closure in the proof for every group a child proves, and
tries the relaxation's minimizers of the children on the real network. The pool of open domains is
kept in compact tensors (slopes only for root-unstable neurons, float16) under a memory cap.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from verify.bab.bounding import Bounded, Params, Root, evaluate, init_params, optimize
from verify.bab.branching import choose_neurons
from verify.bab.proof import ProofBuilder
from verify.budget import Budget

log = logging.getLogger(__name__)

BETA_LR = 0.05


class SearchEnd(enum.Enum):
    """Why the search stopped."""

    PROVED = "every domain was proved"
    FALSIFIED = "a counterexample was found"
    TIMEOUT = "the time budget ran out"
    MEMORY = "the domain pool reached its memory cap"
    STUCK = "some domains have every neuron split and are still not proved"

    @property
    def message(self) -> str:
        return self.value


@dataclass(frozen=True)
class Settings:
    """Search settings (from :class:`verify.Options`)."""

    batch: int = 256
    steps: int = 20
    lr_alpha: float = 0.1
    lr_beta: float = BETA_LR
    candidates: int = 4
    memory_bytes: float = 1.5e9
    log_every: float = 5.0


@dataclass
class Pool:
    """Open domains: splits ``(P, n_k)`` int8, compact slopes/betas ``(P, R, u_k)``, bounds ``(P, R)``,
    proved groups ``(P, G)``, proof node ids ``(P,)``."""

    splits: list[Tensor]
    alphas: list[Tensor]
    betas: list[Tensor]
    lower: Tensor
    proved: Tensor
    node: Tensor

    def __len__(self) -> int:
        return int(self.node.shape[0])

    def take(self, idx: Tensor) -> "Pool":
        return Pool([s[idx] for s in self.splits], [a[idx] for a in self.alphas], [b[idx] for b in self.betas],
                    self.lower[idx], self.proved[idx], self.node[idx])

    def cat(self, other: "Pool") -> "Pool":
        c = lambda a, b: torch.cat([a, b])  # noqa: E731
        return Pool([c(a, b) for a, b in zip(self.splits, other.splits)], [c(a, b) for a, b in zip(self.alphas, other.alphas)],
                    [c(a, b) for a, b in zip(self.betas, other.betas)], c(self.lower, other.lower),
                    c(self.proved, other.proved), c(self.node, other.node))

    def nbytes(self) -> int:
        ts = [*self.splits, *self.alphas, *self.betas, self.lower, self.proved, self.node]
        return int(sum(t.numel() * t.element_size() for t in ts))


@dataclass
class Outcome:
    """What the search found: ``end``; a counterexample ``x`` (``(in_dim,)``) if FALSIFIED; the global
    lower bound and per-row lower bounds over all regions; counts for the report."""

    end: SearchEnd
    counterexample: np.ndarray | None
    global_lower: float
    row_lower: np.ndarray
    domains: int
    open_domains: int
    rounds: int


class Groups:
    """Group membership of the rows being branched on: ``member`` ``(G, R)`` bool."""

    def __init__(self, groups: list[tuple[int, ...]], n_rows: int, device: torch.device) -> None:
        self.member = torch.zeros(len(groups), n_rows, dtype=torch.bool, device=device)
        for g, rows in enumerate(groups):
            self.member[g, list(rows)] = True

    def values(self, lower: Tensor) -> Tensor:
        """``(D, G)``: the best row bound of each group."""
        neg = torch.full_like(lower, -torch.inf)
        return torch.where(self.member[None], lower[:, None, :], neg[:, None, :]).max(dim=2).values

    def objective(self, lower: Tensor, proved: Tensor) -> Tensor:
        """``(D,)``: the smallest group value among groups not yet proved (+inf when all are)."""
        vals = torch.where(proved, torch.full_like(proved, torch.inf, dtype=lower.dtype), self.values(lower))
        return vals.min(dim=1).values

    def open_rows(self, proved: Tensor) -> Tensor:
        """``(D, R)``: rows of groups not yet proved."""
        return ((~proved).to(torch.float32) @ self.member.to(torch.float32)) > 0


class Search:
    """One branch-and-bound run on a :class:`Root` (rows already restricted to the open groups)."""

    def __init__(self, root: Root, groups: list[tuple[int, ...]], global_rows: np.ndarray, settings: Settings,
                 proof: ProofBuilder, is_counterexample, budget: Budget, exact_point=None) -> None:  # type: ignore[no-untyped-def]
        self.root, self.settings, self.proof, self.budget = root, settings, proof, budget
        self.exact_point = exact_point  # (splits per layer (n_k,) int8, global row) -> candidate input or None
        self.groups = Groups(groups, root.n_rows, root.C.device)
        self.global_rows = global_rows
        self.is_counterexample = is_counterexample
        self.unstable = [torch.nonzero(m).flatten() for m in root.unstable()]
        self.row_lower = torch.full((root.n_rows,), torch.inf, dtype=torch.float64, device=root.C.device)
        self.finished_lower = torch.inf
        self.domains = 0
        self.rounds = 0
        self.stuck: Pool | None = None
        self.final_pool: Pool | None = None  # the open domains when :meth:`run` returned

    # --- compact <-> full width ------------------------------------------------------------------
    def compact(self, params: Params) -> tuple[list[Tensor], list[Tensor]]:
        return ([a[:, :, u].to(torch.float16) for a, u in zip(params.alphas, self.unstable)],
                [b[:, :, u].to(torch.float32) for b, u in zip(params.betas, self.unstable)])

    def full(self, pool: Pool) -> Params:
        base = init_params(self.root, len(pool))
        for a, b, ca, cb, u in zip(base.alphas, base.betas, pool.alphas, pool.betas, self.unstable):
            a[:, :, u] = ca.to(torch.float32)
            b[:, :, u] = cb
        return base

    # --- the loop ----------------------------------------------------------------------------------
    def run(self, start: Pool) -> Outcome:
        pool, last_log = start, time.monotonic()
        end = SearchEnd.PROVED
        while len(pool):
            if self.budget.expired():
                end = SearchEnd.TIMEOUT
                break
            if pool.nbytes() > self.settings.memory_bytes:
                end = SearchEnd.MEMORY
                break
            batch, pool = self._pop(pool)
            children, cex = self._expand(batch)
            if cex is not None:
                return self._outcome(SearchEnd.FALSIFIED, cex, pool.cat(children))
            pool = pool.cat(self._keep_open(children))
            self.rounds += 1
            if time.monotonic() - last_log > self.settings.log_every:
                last_log = time.monotonic()
                log.info("bab: %d rounds, %d domains bounded, %d open, lowest bound %.4g", self.rounds, self.domains,
                         len(pool), float(self.groups.objective(pool.lower, pool.proved).min()) if len(pool) else np.inf)
        if end is SearchEnd.PROVED and self.stuck is not None:
            end, pool = SearchEnd.STUCK, self.stuck
        elif self.stuck is not None:
            pool = pool.cat(self.stuck)
        return self._outcome(end, None, pool)

    def close_open(self, pool: Pool) -> None:
        """Record a closure of every open row at every domain of ``pool`` whatever its bound (for lemmas,
        whose value is the smallest leaf bound, :mod:`verify.bab.lemma_check`)."""
        if not len(pool):
            return
        dom, rows = torch.nonzero(self.groups.open_rows(pool.proved), as_tuple=True)
        if dom.numel():
            self._record(pool.splits, self.full(pool), pool.node, dom, rows)

    def _pop(self, pool: Pool) -> tuple[Pool, Pool]:
        obj = self.groups.objective(pool.lower, pool.proved)
        k = min(len(pool), self.settings.batch)
        idx = torch.topk(-obj, k).indices
        keep = torch.ones(len(pool), dtype=torch.bool, device=obj.device)
        keep[idx] = False
        return pool.take(idx), pool.take(torch.nonzero(keep).flatten())

    def _expand(self, batch: Pool) -> tuple[Pool, np.ndarray | None]:
        params = self.full(batch)
        open_rows = self.groups.open_rows(batch.proved)
        layer, neuron = choose_neurons(self.root, batch.splits, params, open_rows, batch.lower, self.groups,
                                       batch.proved, self.settings.candidates)
        if bool((layer < 0).any()):  # every neuron fixed and still open: nothing left to split here
            stuck = torch.nonzero(layer < 0).flatten()
            cex = self._solve_stuck(batch.take(stuck))
            if cex is not None:
                return batch, cex
            self.stuck = batch.take(stuck) if self.stuck is None else self.stuck.cat(batch.take(stuck))
            ok = torch.nonzero(layer >= 0).flatten()
            batch, layer, neuron = batch.take(ok), layer[ok], neuron[ok]
            params = Params([a[ok] for a in params.alphas], [b[ok] for b in params.betas])
            if not len(batch):
                return batch, None
        minus, plus = self.proof.add_children(batch.node.cpu().numpy(), layer.cpu().numpy(), neuron.cpu().numpy())
        d = len(batch)
        splits = []
        for k, s in enumerate(batch.splits):
            s2 = torch.cat([s, s])
            hit = torch.nonzero(layer == k).flatten()
            s2[hit, neuron[hit]] = -1
            s2[hit + d, neuron[hit]] = 1
            splits.append(s2)
        child_params = Params([torch.cat([a, a]) for a in params.alphas], [torch.cat([b, b]) for b in params.betas])
        proved = torch.cat([batch.proved, batch.proved])
        bounded = optimize(self.root, splits, child_params, self.groups.open_rows(proved), self.settings.steps,
                           self.settings.lr_alpha, self.settings.lr_beta, self.budget.deadline)
        self.domains += 2 * d
        lower = torch.maximum(torch.cat([batch.lower, batch.lower]), bounded.lower)
        nodes = torch.as_tensor(np.concatenate([minus, plus]), device=lower.device)
        proved = self.close(splits, bounded, proved, nodes)
        ca, cb = self.compact(bounded.params)
        children = Pool(splits, ca, cb, lower, proved, nodes)
        cex = self.is_counterexample(self.minimizers(bounded, proved, lower))
        return children, cex

    def _solve_stuck(self, stuck: Pool) -> np.ndarray | None:
        """Every neuron of these domains is fixed, so each is a linear program: its minimizer, when it
        violates the property, is a counterexample."""
        if self.exact_point is None:
            return None
        worst = torch.where(self.groups.open_rows(stuck.proved), stuck.lower, torch.full_like(stuck.lower, torch.inf)).argmin(dim=1)
        for i in range(min(len(stuck), 16)):
            if self.budget.expired():
                break
            x = self.exact_point([s[i].cpu().numpy() for s in stuck.splits], int(self.global_rows[int(worst[i])]))
            cex = None if x is None else self.is_counterexample(x[None])
            if cex is not None:
                return cex
        return None

    def close(self, splits: list[Tensor], bounded: Bounded, proved: Tensor, nodes: Tensor) -> Tensor:
        """Record closures for rows of unproved groups whose checked bound is > 0; returns the new ``proved``."""
        newly = (bounded.lower > 0) & self.groups.open_rows(proved)
        # one row per newly proved group is enough: the first row of the group that is > 0
        grp = self.groups.member[None] & newly[:, None, :]  # (D, G, R)
        first = grp.to(torch.int8).argmax(dim=2)  # (D, G)
        has = grp.any(dim=2)
        dom, g = torch.nonzero(has, as_tuple=True)
        if dom.numel():
            self._record(splits, bounded.params, nodes, dom, first[dom, g])
        return proved | has

    def _record(self, splits: list[Tensor], params: Params, nodes: Tensor, dom: Tensor, rows: Tensor) -> None:
        """Closures of local ``rows[i]`` at domain ``dom[i]`` (proof node ``nodes[dom[i]]``) with ``params``."""
        alphas = torch.cat([params.alphas[k][dom, rows][:, u] for k, u in enumerate(self.unstable)], dim=1)
        alpha_u8 = torch.round(alphas.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        betas = self._canonical_betas(splits, params, dom, rows)
        self.proof.add_closures(nodes[dom].cpu().numpy(), self.global_rows[rows.cpu().numpy()], alpha_u8, betas)

    def _canonical_betas(self, splits: list[Tensor], params: Params, dom: Tensor, rows: Tensor) -> list[np.ndarray]:
        """Per closure, its betas at its split neurons sorted by (layer, neuron)."""
        parts = []
        for s, b in zip(splits, params.betas):
            mask = (s[dom] != 0).cpu().numpy()
            vals = b[dom, rows].cpu().numpy()
            parts.append((mask, vals))
        return [np.concatenate([vals[i][mask[i]] for mask, vals in parts]) for i in range(dom.numel())]

    def minimizers(self, bounded: Bounded, proved: Tensor, lower: Tensor) -> np.ndarray:
        """Per domain with open groups, the box corner minimizing its worst open row's linear bound."""
        coeff = bounded.coeffs[-1]  # (D, R, in_dim)
        rows_open = self.groups.open_rows(proved)
        masked = torch.where(rows_open, lower, torch.full_like(lower, torch.inf))
        worst = masked.argmin(dim=1)
        alive = rows_open.any(dim=1)
        a = coeff[torch.arange(coeff.shape[0], device=coeff.device), worst][alive]
        lo, hi = self.root.lower[0], self.root.upper[0]
        return torch.where(a > 0, lo, hi).cpu().numpy()

    def _keep_open(self, children: Pool) -> Pool:
        obj = self.groups.objective(children.lower, children.proved)
        done = torch.isinf(obj) & (obj > 0)
        if bool(done.any()):
            vals = self.groups.values(children.lower[done]).min(dim=1).values
            self.finished_lower = min(self.finished_lower, float(vals.min()))
            self.row_lower = torch.minimum(self.row_lower, children.lower[done].min(dim=0).values)
        return children.take(torch.nonzero(~done).flatten())

    def _outcome(self, end: SearchEnd, cex: np.ndarray | None, pool: Pool) -> Outcome:
        self.final_pool = pool
        row_lower = self.row_lower
        glob = self.finished_lower
        if len(pool):
            row_lower = torch.minimum(row_lower, pool.lower.min(dim=0).values)
            glob = min(glob, float(self.groups.values(pool.lower).min(dim=1).values.min()))
        return Outcome(end, cex, glob, row_lower.cpu().numpy(), self.domains, len(pool), self.rounds)


def root_pool(search: Search, params: Params, lower: Tensor, node: int = 0) -> Pool:
    """The pool holding only the root domain (no splits), proof node ``node``."""
    dev = lower.device
    splits = [torch.zeros(1, w, dtype=torch.int8, device=dev) for w in search.root.widths]
    ca, cb = search.compact(params)
    proved = torch.zeros(1, search.groups.member.shape[0], dtype=torch.bool, device=dev)
    return Pool(splits, ca, cb, lower, proved, torch.full((1,), node, dtype=torch.long, device=dev))


__all__ = ["Outcome", "Pool", "Search", "SearchEnd", "Settings", "root_pool", "evaluate"]
