"""The first-order polish of the SDP dual (verify.solvers.sdp_polish, the dual backend's fallback when the
interior-point method stops on numerical trouble) and the dual backend under short limits: exact gradients,
sound bounds (recomputed by form_bound and below the Clarabel optimum), convergence towards the reference."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import small_relaxation
from verify.results import SolverStatus
from verify.solvers.sdp_cvxpy import solve_cvxpy
from verify.solvers.sdp_dual import linear_start, solve_form, strict_start
from verify.solvers.sdp_form import form_bound
from verify.solvers.sdp_polish import SmoothedDual, polish


@pytest.mark.parametrize("triangle", [False, True])
def test_smoothed_gradient_matches_finite_differences(triangle):
    rel, spec = small_relaxation(1, (4, 10, 6, 3))
    form = rel.form(rel.objective(spec.C[0], spec.d[0]), triangle)
    th = strict_start(form, 0.5)
    rng = np.random.default_rng(0)
    th[1 + form.box.size + form.ge_rows.size :] = 0.05 * rng.standard_normal(form.eq_rows.size)  # some nu
    fun = SmoothedDual(form)
    fun.t = 0.05
    _, grad = fun(th)
    h = 1e-6
    for _ in range(5):
        d = rng.standard_normal(th.size)
        num = (fun(th + h * d)[0] - fun(th - h * d)[0]) / (2 * h)
        assert num == pytest.approx(grad @ d, rel=1e-5, abs=1e-7)


def test_smoothed_value_never_exceeds_the_dual_function():
    """The smoothing replaces min(0, lambda_min) by a lower approximation, so the smoothed value is at most
    the (non-rounded) dual function, and approaches it as the temperature falls."""
    rel, spec = small_relaxation(0, (3, 8, 8, 3))
    form = rel.form(rel.objective(spec.C[0], spec.d[0]))
    y = linear_start(form)
    fun = SmoothedDual(form)
    vals = []
    for t in (1e-1, 1e-2, 1e-3, 1e-5):
        fun.t = t
        vals.append(-fun(y)[0])
    exact = form_bound(form, y)
    assert all(v <= exact + 1e-9 * (1 + abs(exact)) for v in vals)
    assert vals == sorted(vals)
    assert vals[-1] == pytest.approx(exact, abs=1e-3)


@pytest.mark.parametrize("seed,dims", [(0, (3, 8, 8, 3)), (2, (3, 6, 6, 6, 3))])
def test_polish_from_linear_start_approaches_the_reference(seed, dims):
    rel, spec = small_relaxation(seed, dims)
    form = rel.form(rel.objective(spec.C[0], spec.d[0]))
    ref = solve_cvxpy(form, 60.0, solver="CLARABEL")
    if ref.status is not SolverStatus.OPTIMAL:
        pytest.skip("reference did not converge")
    start = linear_start(form)
    y, bound = polish(form, start, time.perf_counter() + 5.0)
    assert bound == form_bound(form, y)  # the reported bound is the sound recomputation
    assert bound >= form_bound(form, start)
    assert bound <= ref.primal + 1e-6 * max(1.0, abs(ref.primal))  # never beats the optimum
    assert abs(bound - ref.primal) <= 1e-2 * max(1.0, abs(ref.primal))


def test_polish_stops_at_target_and_deadline():
    rel, spec = small_relaxation(2, (3, 6, 6, 6, 3))
    form = rel.form(rel.objective(spec.C[0], spec.d[0]))
    start = linear_start(form)
    b0 = form_bound(form, start)
    t0 = time.perf_counter()
    y, bound = polish(form, start, t0 - 1.0)  # already past the deadline: start returned
    assert bound == b0
    full = polish(form, start, time.perf_counter() + 3.0)[1]
    assert full > b0 + 1e-6  # the test compares something
    target = 0.5 * (b0 + full)
    y, bound = polish(form, start, time.perf_counter() + 20.0, target=target)
    assert bound > target and bound == form_bound(form, y)


def test_short_limits_give_a_sound_bound():
    """Time and iteration limits too short for the interior-point method: the result is still the
    recomputed dual bound and below the reference optimum."""
    rel, spec = small_relaxation(1, (4, 10, 6, 3))
    for r in range(spec.n_margins):
        form = rel.form(rel.objective(spec.C[r], spec.d[r]))
        ref = solve_cvxpy(form, 60.0, solver="CLARABEL")
        sol = solve_form(form, 1.0, 3)
        assert np.isfinite(sol.bound) and sol.bound == form_bound(form, sol.y)
        if ref.status is SolverStatus.OPTIMAL:
            assert sol.bound <= ref.primal + 1e-6 * max(1.0, abs(ref.primal))
