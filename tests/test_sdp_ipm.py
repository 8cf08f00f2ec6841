"""The primal-dual interior-point SDP solver (verify.solvers.sdp_ipm): its structured linear algebra
against dense brute force, and its answers against the Clarabel reference and the sound dual bound."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import small_relaxation
from verify.results import SolverStatus
from verify.solvers.sdp_cvxpy import solve_cvxpy
from verify.solvers.sdp_dual import strict_start
from verify.solvers.sdp_ipm import ArrowFactor, SDPStandardForm, StopReason, lanczos_min, solve_ipm, times_structured
from verify.solvers.sdp_problem import Multipliers, dual_blocks, dual_bound


def _random_multipliers(rel, rng, triangle: bool) -> Multipliers:
    n0, n = rel.n0, rel.n_unstable
    return Multipliers(rng.uniform(0.5, 2, n0), rng.uniform(0.5, 2, n), rng.uniform(0, 1, n), rng.normal(0, 0.3, n),
                       float(rng.normal()), rng.uniform(0, 1, n) if triangle else np.zeros(0))


def _dense_constraints(sf: SDPStandardForm) -> list[np.ndarray]:
    """Every A_i as a dense matrix, from the adjoint applied to unit vectors."""
    return [sf.adjoint(np.eye(sf.m)[i]) for i in range(sf.m)]


@pytest.mark.parametrize("triangle", [False, True])
def test_standard_form_matches_the_model_dual_matrix(triangle):
    """The IPM's dual matrix C - A^T(y) is the model's M (the one the sound bound is computed from),
    reordered to [1, z, x]."""
    rel, spec = small_relaxation(1, (4, 10, 6, 3))
    obj = rel.objective(spec.C[0], spec.d[0])
    m = _random_multipliers(rel, np.random.default_rng(0), triangle)
    sf = SDPStandardForm(rel, obj, triangle)
    z = sf.dual_matrix(sf.from_multipliers(m))
    myy, b = dual_blocks(rel, obj, m)
    k = 1 + rel.n_unstable
    assert np.allclose(z[:k, :k], myy) and np.allclose(z[:k, k:], b)
    assert np.allclose(z[k:, k:], np.diag(m.mu_x))
    back = sf.multipliers(sf.from_multipliers(m))
    assert np.allclose(back.pack(), m.pack())
    assert np.allclose(sf.slack_dual(sf.from_multipliers(m)), np.concatenate([m.mu_z, m.mu_x, m.lam, m.kappa]))


@pytest.mark.parametrize("triangle", [False, True])
def test_apply_is_the_adjoint_and_schur_matrix_is_brute_force(triangle):
    rel, spec = small_relaxation(2, (3, 6, 6, 6, 3))
    sf = SDPStandardForm(rel, rel.objective(spec.C[1], spec.d[1]), triangle)
    rng = np.random.default_rng(1)
    a = _dense_constraints(sf)
    w = rng.normal(size=(sf.n, sf.n))
    w = w + w.T
    assert np.allclose(sf.apply(w), [np.sum(ai * w) for ai in a])
    x = rng.normal(size=(sf.n, sf.n))
    x = x @ x.T + np.eye(sf.n)
    zi = rng.normal(size=(sf.n, sf.n))
    zi = zi @ zi.T + np.eye(sf.n)
    ratio = rng.uniform(0.1, 2, sf.slack_con.size)
    brute = np.array([[np.trace(ai @ x @ aj @ zi) for aj in a] for ai in a])
    brute[sf.slack_con, sf.slack_con] += ratio
    assert np.allclose(sf.schur_matrix(x, zi, ratio), brute, rtol=1e-10, atol=1e-9 * np.abs(brute).max())


def test_arrow_factor_inverse_whitening_and_products():
    rng = np.random.default_rng(2)
    k, n0 = 7, 30
    b = rng.normal(size=(k, n0))
    d = rng.uniform(0.5, 2, n0)
    yy = rng.normal(size=(k, k))
    yy = yy @ yy.T + b @ np.diag(1 / d) @ b.T + np.eye(k)
    z = np.block([[yy, b], [b.T, np.diag(d)]])
    f = ArrowFactor(z, k)
    assert np.allclose(f.inverse(), np.linalg.inv(z))
    y = rng.normal(size=(5, k + n0))
    assert np.allclose(f.times_inverse(y), y @ np.linalg.inv(z))
    lmat = np.column_stack([f.whiten(e) for e in np.eye(k + n0)])  # L^{-1}
    assert np.allclose(lmat @ z @ lmat.T, np.eye(k + n0))
    v, u = rng.normal(size=k + n0), rng.normal(size=k + n0)
    assert np.isclose(u @ f.whiten(v), f.whiten_t(u) @ v)  # whiten_t is the adjoint
    w = np.zeros((k + n0, k + n0))
    w[:k] = rng.normal(size=(k, k + n0))
    w = w + w.T + np.diag(rng.normal(size=k + n0))
    assert np.allclose(times_structured(y, w, k), y @ w)


def test_lanczos_never_below_the_smallest_eigenvalue_and_close():
    rng = np.random.default_rng(3)
    for n in (5, 60, 300):
        a = rng.normal(size=(n, n))
        a = a + a.T
        true = np.linalg.eigvalsh(a)[0]
        est = lanczos_min(lambda v: a @ v, n, steps=min(n, 80))
        assert est >= true - 1e-9 * abs(true)
        assert est <= true + 0.05 * (np.linalg.eigvalsh(a)[-1] - true)


@pytest.mark.parametrize("seed,dims", [(0, (3, 8, 8, 3)), (1, (4, 10, 6, 3)), (2, (3, 6, 6, 6, 3))])
@pytest.mark.parametrize("triangle", [False, True])
def test_ipm_brackets_the_clarabel_optimum(seed, dims, triangle):
    """Converged: sound bound <= Clarabel's optimum <= our primal value (+ tolerance), and they agree to 1e-6."""
    rel, spec = small_relaxation(seed, dims)
    for r in range(spec.n_margins):
        obj = rel.objective(spec.C[r], spec.d[r])
        ref = solve_cvxpy(rel, obj, 60.0, solver="CLARABEL", triangle=triangle)
        if ref.status is not SolverStatus.OPTIMAL:
            continue
        scale = 1.0 + abs(obj[0]) + np.abs(obj[1]).sum() + np.abs(obj[2]).sum()
        res = solve_ipm(rel, obj, strict_start(rel, obj, 0.02 * scale, triangle), time.perf_counter() + 60,
                        triangle=triangle)
        tol = 1e-6 * max(1.0, abs(ref.primal))
        assert res.converged
        assert res.bound == dual_bound(rel, obj, res.multipliers)
        assert res.bound <= ref.primal + tol
        assert abs(res.bound - ref.primal) <= tol and abs(res.primal - ref.primal) <= tol


def test_ipm_stops_at_target_deadline_and_iteration_cap_with_a_sound_bound():
    rel, spec = small_relaxation(1, (4, 10, 6, 3))
    obj = rel.objective(spec.C[0], spec.d[0])
    ref = solve_cvxpy(rel, obj, 60.0, solver="CLARABEL")
    start = strict_start(rel, obj, 0.5)
    full = solve_ipm(rel, obj, start, time.perf_counter() + 60)
    hit = solve_ipm(rel, obj, start, time.perf_counter() + 60, target=full.bound - 0.05)
    assert hit.reason is StopReason.TARGET_REACHED and hit.bound > full.bound - 0.05 and hit.iterations < full.iterations
    out = solve_ipm(rel, obj, start, time.perf_counter() + 60, target=full.bound + 0.05)
    assert out.reason is StopReason.TARGET_OUT_OF_REACH and out.primal < full.bound + 0.05
    for res in (solve_ipm(rel, obj, start, time.perf_counter() - 1.0), solve_ipm(rel, obj, start, time.perf_counter() + 60,
                                                                                  max_iter=3)):
        assert not res.converged and np.isfinite(res.bound)
        assert res.bound == dual_bound(rel, obj, res.multipliers) <= ref.primal + 1e-9


def test_stop_reasons_map_to_statuses():
    """Stop reasons are an enum: only the three solved ones count as OPTIMAL, limits keep their own
    status, every numerical stop is NUMERICAL_ERROR; messages are distinct words."""
    solved = {StopReason.CONVERGED, StopReason.TARGET_REACHED, StopReason.TARGET_OUT_OF_REACH}
    for r in StopReason:
        assert (r.status is SolverStatus.OPTIMAL) == (r in solved)
    assert StopReason.TIME_LIMIT.status is SolverStatus.TIME_LIMIT
    assert StopReason.ITERATION_LIMIT.status is SolverStatus.ITERATION_LIMIT
    assert StopReason.NO_PROGRESS.status is SolverStatus.NUMERICAL_ERROR
    assert len({r.message for r in StopReason}) == len(StopReason)


def test_solvers_never_import_relax():
    """Layout rule: the relaxations feed the solvers, never the other way round."""
    import ast
    from pathlib import Path

    import verify.solvers

    for path in Path(verify.solvers.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("verify.relax"), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("verify.relax") for a in node.names), path.name
