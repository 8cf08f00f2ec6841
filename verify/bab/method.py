"""Method "bab": decide a property by branch and bound, with a checked proof behind every CERTIFIED.

Order of work within the wall-time budget (``options.timeout``, else ``options.time_limit`` seconds):

1. the box centre is evaluated (a counterexample there ends it);
2. the root is bounded: CROWN pre-activation bounds, then margin slopes optimized (alpha-CROWN);
3. the groups still open are branched on (:mod:`verify.bab.search`, ReLU splits; for inputs of at
   most :data:`INPUT_SPLIT_MAX_DIM` coordinates the box itself is split, :mod:`verify.bab.inputsplit`),
   with the relaxation's minimizers and a short PGD from them tried on the real network as it goes;
4. a proof that every region is closed is checked by the independent numpy checker
   (:func:`verify.bab.proof_check.check_proof`); only a proof that checks gives CERTIFIED.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np
import torch

from verify.bab.bounding import Params, init_params, make_root, optimize
from verify.bab.proof import Proof, ProofBuilder, ProofKind
from verify.bab.proof_check import check_proof
from verify.bab.refine import refine_hidden
from verify.bab.search import Outcome, Search, SearchEnd, Settings, root_pool
from verify.bounds import preactivation_bounds
from verify.budget import Budget
from verify.network import Network
from verify.options import Options
from verify.results import MethodResult, SolverStatus, Verdict, group_bound
from verify.spec import InputBox, Property

log = logging.getLogger(__name__)

Reference = Callable[[np.ndarray], np.ndarray]

#: boxes of at most this many (non-degenerate) input coordinates are split instead of ReLUs
INPUT_SPLIT_MAX_DIM = 16
#: the root's slopes get this many times ``alpha_steps``
ROOT_STEP_FACTOR = 3
#: with lemmas wanted, the first search gets this share of the time, at most FIRST_TRY_MAX seconds: easy
#: properties end there (on mnistfc every property the first search decided took <= 16 s of 120-300 s),
#: the hard ones are decided after the lemmas, which get LEMMA_SHARE of what is left, the second search the
#: rest. Measured on mnistfc 256x4 prop_6_0.05 (300 s): first try 60 s and lemmas 0.5 -> timeout (43 neurons
#: of the last layer unstable); first try 30 s and lemmas 0.7 -> 23 unstable, proved in 231 s.
FIRST_TRY = 0.2
FIRST_TRY_MAX = 30.0
LEMMA_SHARE = 0.7
#: seconds between PGD runs seeded from the search's most promising points
ATTACK_INTERVAL = 5.0


def certify_bab(net: Network, prop: Property, options: Options, reference: Reference | None = None) -> MethodResult:
    """Branch and bound on ``prop``; see the module docstring.

    Returns CERTIFIED (``extra["proof"]``: the checked :class:`~verify.bab.proof.Proof`), FALSIFIED (with a
    counterexample, re-checked by the caller on the original model) or UNKNOWN (time or memory ran out;
    ``bound`` is still a sound lower bound on the worst-case margin over the whole box).
    """
    t0 = time.perf_counter()
    budget = Budget.start(options.timeout if options.timeout is not None else options.time_limit)
    spec, box = prop.output, prop.box
    if spec.C.shape[1] != net.out_dim or box.dim != net.in_dim:
        raise ValueError(f"property has {box.dim} inputs / {spec.C.shape[1]} outputs; network {net.in_dim} / {net.out_dim}")
    falsifier = Falsifier(net, prop, options, reference, budget)
    centre = prop.center if prop.center is not None and box.contains(prop.center) else box.center
    x = falsifier.points(centre[None])
    if x is not None:
        return _falsified(spec, net, x, t0, "the centre of the box is a counterexample")
    if options.bab_split == "input" or (options.bab_split == "auto" and _input_split_wanted(box)):
        from verify.bab.inputsplit import input_split_bab

        return input_split_bab(net, prop, options, falsifier, budget, t0)
    return _relu_split_bab(net, prop, options, falsifier, budget, t0)


def _input_split_wanted(box: InputBox) -> bool:
    return int(np.sum(box.upper > box.lower)) <= INPUT_SPLIT_MAX_DIM


def settings_from(options: Options) -> Settings:
    return Settings(batch=options.bab_batch, steps=options.bab_steps, lr_alpha=options.alpha_lr)


def _relu_split_bab(net: Network, prop: Property, options: Options, falsifier: "Falsifier", budget: Budget,
                    t0: float) -> MethodResult:
    """ReLU splits on alpha-CROWN's bounds; on deeper nets, when that does not decide within :data:`FIRST_TRY`
    of the time, the hidden layers' bounds are tightened by lemmas (:mod:`verify.bab.refine`) and the search
    starts again on them."""
    proved_bounds = preactivation_bounds(net, prop.box, "alpha-crown", options)
    hidden = list(proved_bounds[:-1])
    lemmas_wanted = options.bab_lemmas and len(hidden) >= 2
    first = Budget.start(min(FIRST_TRY * budget.remaining(), FIRST_TRY_MAX)) if lemmas_wanted else budget
    res = _search(net, prop, options, falsifier, hidden, proved_bounds.proof, (), first, t0)
    if not lemmas_wanted or res.verdict is not Verdict.UNKNOWN or budget.expired() or res.status is SolverStatus.NUMERICAL_ERROR:
        return res
    refined = refine_hidden(net, prop.box, proved_bounds.proof, settings_from(options), LEMMA_SHARE * budget.remaining(),
                            options.device, ROOT_STEP_FACTOR * options.alpha_steps, options.alpha_lr)
    log.info("bab: lemmas took unstable neurons per layer from %s to %s", refined.unstable_before, refined.unstable_after)
    res = _search(net, prop, options, falsifier, refined.hidden, proved_bounds.proof, refined.lemmas, budget, t0)
    res.extra["unstable_before_lemmas"] = refined.unstable_before
    res.extra["unstable_after_lemmas"] = refined.unstable_after
    return res


def _search(net: Network, prop: Property, options: Options, falsifier: "Falsifier", hidden: list, root_bounds,  # type: ignore[no-untyped-def]
            lemmas: tuple[Proof, ...], budget: Budget, t0: float) -> MethodResult:
    """Root slopes, then one search per open group, on the hidden-layer bounds ``hidden`` (sound: proved by
    ``root_bounds`` and ``lemmas``, which go into the proof)."""
    spec, box = prop.output, prop.box
    root = make_root(net, box, spec.C, spec.d, hidden, options.device)
    unstable = [np.flatnonzero(m.cpu().numpy()) for m in root.unstable()]
    proof = ProofBuilder(ProofKind.RELU_SPLIT, int(sum(u.size for u in unstable)))
    settings = settings_from(options)
    m = spec.n_margins
    splits = [torch.zeros(1, w, dtype=torch.int8, device=options.device) for w in root.widths]
    first = optimize(root, splits, init_params(root, 1), torch.ones(1, m, dtype=torch.bool, device=options.device),
                     ROOT_STEP_FACTOR * options.alpha_steps, options.alpha_lr, settings.lr_beta, budget.deadline)
    everything = Search(root, list(spec.groups), np.arange(m), settings, proof, falsifier.points, budget)
    proved = everything.close(splits, first, torch.zeros(1, len(spec.groups), dtype=torch.bool, device=options.device),
                               torch.zeros(1, dtype=torch.long, device=options.device))[0].cpu().numpy()
    x = falsifier.points(everything.minimizers(first, torch.as_tensor(proved[None]), first.lower))
    if x is not None:
        return _falsified(spec, net, x, t0, "the root relaxation's minimizer is a counterexample")
    root_lower = first.lower[0].cpu().numpy()
    open_groups = [g for g, done in zip(spec.groups, proved) if not done]
    if not open_groups:
        return _finish(net, prop, proof, unstable, root_bounds, lemmas, None, root_lower, t0, "proved at the root")
    # one tree per open group, hardest (smallest root bound) first: a group that cannot be proved ends it
    open_groups.sort(key=lambda g: max(root_lower[list(g)]))
    exact = lambda sp, row: _linear_minimizer(net, box, hidden, sp, spec.C[row], spec.d[row], options, budget)  # noqa: E731
    row_lower, totals = root_lower.copy(), Outcome(SearchEnd.PROVED, None, np.inf, root_lower, 0, 0, 0)
    for group in open_groups:
        rows = np.array(group)
        sub = make_root(net, box, spec.C[rows], spec.d[rows], hidden, options.device)
        search = Search(sub, [tuple(range(rows.size))], rows, settings, proof, falsifier.points, budget, exact)
        start_params = Params([a[:, rows] for a in first.params.alphas], [b[:, rows] for b in first.params.betas])
        outcome = search.run(root_pool(search, start_params, first.lower[:, rows], proof.add_root()))
        row_lower[rows] = np.maximum(root_lower[rows], outcome.row_lower)
        totals = _add(totals, outcome)
        if outcome.end is SearchEnd.FALSIFIED:
            return _falsified(spec, net, outcome.counterexample, t0, f"counterexample found after {totals.domains} domains")
        if outcome.end is not SearchEnd.PROVED:
            bound = min(group_bound(spec.groups, root_lower), outcome.global_lower)
            left = len(open_groups) - open_groups.index(group) - 1
            return MethodResult("bab", Verdict.UNKNOWN, bound, row_lower, time.perf_counter() - t0, _status(outcome.end),
                                f"{outcome.end.message}: {totals.domains} domains bounded, {outcome.open_domains} still open "
                                f"(group {spec.groups.index(group)}; {left} more groups not tried)"
                                + (f"; on bounds tightened by {len(lemmas)} layers of lemmas" if lemmas else ""),
                                extra=_stats(totals))
    what = f"{totals.domains} domains" + (f", on bounds tightened by {len(lemmas)} layers of lemmas" if lemmas else "")
    return _finish(net, prop, proof, unstable, root_bounds, lemmas, totals, row_lower, t0, what)


def _add(a: Outcome, b: Outcome) -> Outcome:
    """Counts of two searches added (for the report)."""
    return Outcome(b.end, b.counterexample, min(a.global_lower, b.global_lower), b.row_lower, a.domains + b.domains,
                   b.open_domains, a.rounds + b.rounds)


def _linear_minimizer(net: Network, box: InputBox, hidden: list, splits: list[np.ndarray], c: np.ndarray, d: float,
                      options: Options, budget: Budget) -> np.ndarray | None:
    """The LP minimizer of ``c^T f(x) + d`` on a region where every unstable neuron's sign is fixed
    (the triangle LP with the split bounds is then exact); None if the LP has no solution."""
    from verify.relax.lp import build_triangle_lp, lp_backend, margin_objective

    clamped = [(np.where(s > 0, np.maximum(l, 0.0), l), np.where(s < 0, np.minimum(u, 0.0), u))
               for (l, u), s in zip(hidden, splits)]
    if any(np.any(l > u) for l, u in clamped):
        return None
    tri = build_triangle_lp(net, box, clamped)
    cost, offset = margin_objective(net, tri, c, d)
    sol = lp_backend("highs").solve_many(tri.lp, [cost], [offset], budget.limit(options.time_limit))[0]
    return None if sol.x is None else sol.x[: net.in_dim]


def _status(end: SearchEnd) -> SolverStatus:
    return SolverStatus.TIME_LIMIT if end is SearchEnd.TIMEOUT else SolverStatus.ITERATION_LIMIT


def _stats(outcome: Outcome | None) -> dict:
    if outcome is None:
        return {"domains": 1, "rounds": 0}
    return {"domains": outcome.domains, "rounds": outcome.rounds, "open_domains": outcome.open_domains}


def _finish(net: Network, prop: Property, builder: ProofBuilder, unstable: list[np.ndarray], root_bounds,  # type: ignore[no-untyped-def]
            lemmas: tuple[Proof, ...], outcome: Outcome | None, row_lower: np.ndarray, t0: float, what: str) -> MethodResult:
    """Build the proof, check it independently, and report CERTIFIED only if it checks."""
    spec, box = prop.output, prop.box
    proof = builder.build(net.digest(), box.lower, box.upper, spec.C, spec.d, spec.groups, tuple(unstable), root_bounds, lemmas)
    return checked_result(net, prop, proof, row_lower, outcome, t0, what)


def checked_result(net: Network, prop: Property, proof: Proof, row_lower: np.ndarray, outcome: Outcome | None,
                   t0: float, what: str) -> MethodResult:
    check = check_proof(net, prop, proof)
    extra = {**_stats(outcome), "proof": proof, "proof_check": check.message, "leaves": check.n_leaves}
    elapsed = time.perf_counter() - t0
    if not check.ok:
        log.warning("bab: the proof did not check (%s); reporting UNKNOWN", check.message)
        return MethodResult("bab", Verdict.UNKNOWN, float("nan"), row_lower, elapsed, SolverStatus.NUMERICAL_ERROR,
                            f"search closed every domain ({what}) but the proof did not check: {check.message}", extra=extra)
    bound = max(check.smallest_bound, 0.0) if np.isfinite(check.smallest_bound) else 0.0
    return MethodResult("bab", Verdict.CERTIFIED, bound, row_lower, elapsed, SolverStatus.OPTIMAL,
                        f"proved ({what}); {check.message}", extra=extra)


def _falsified(spec, net: Network, x: np.ndarray, t0: float, what: str) -> MethodResult:  # type: ignore[no-untyped-def]
    margins = spec.margins(net.forward(x[None]))[0]
    worst = group_bound(spec.groups, margins)
    return MethodResult("bab", Verdict.FALSIFIED, worst, margins, time.perf_counter() - t0, SolverStatus.NOT_APPLICABLE,
                        what, counterexample=x)


class Falsifier:
    """Tries points on the real network (float64, and the reference model when given); runs a short
    PGD seeded from them every :data:`ATTACK_INTERVAL` seconds."""

    def __init__(self, net: Network, prop: Property, options: Options, reference: Reference | None, budget: Budget) -> None:
        self.net, self.prop, self.reference, self.budget = net, prop, reference, budget
        self.options = options.with_(attack_restarts=2, attack_steps=min(options.attack_steps, 30))
        self.last_attack = time.monotonic()

    def points(self, xs: np.ndarray) -> np.ndarray | None:
        """A point of ``xs`` ``(K, in_dim)`` (clipped into the box) that violates the property, or None."""
        if xs is None or len(xs) == 0:
            return None
        box, spec = self.prop.box, self.prop.output
        pts = np.clip(np.asarray(xs, dtype=np.float64).reshape(len(xs), -1), box.lower, box.upper)
        hit = np.flatnonzero(spec.violated(self.net.forward(pts)))
        for i in hit[:4]:
            if self.reference is None or spec.violated(np.asarray(self.reference(pts[i: i + 1]), dtype=np.float64))[0]:
                return pts[i]
        if time.monotonic() - self.last_attack > ATTACK_INTERVAL and not self.budget.expired():
            self.last_attack = time.monotonic()
            return self._pgd(pts[:8])
        return None

    def _pgd(self, starts: np.ndarray) -> np.ndarray | None:
        from verify.attack import pgd_attack

        res = pgd_attack(self.net, self.prop, self.budget.options_for(self.options), self.reference, starts=starts)
        return res.counterexample if res.verdict is Verdict.FALSIFIED else None
