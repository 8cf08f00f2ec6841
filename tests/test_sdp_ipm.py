"""The primal-dual interior-point SDP solver (verify.solvers.sdp_ipm) on the arrow form (sdp_form): its
structured linear algebra (sdp_linalg) against dense brute force, and its answers against the Clarabel
reference and the sound dual bound."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import small_relaxation
from verify.results import SolverStatus
from verify.solvers.sdp_cvxpy import solve_cvxpy
from verify.solvers.sdp_dual import strict_start
from verify.solvers.sdp_form import Arrow, ArrowSDP, form_bound
from verify.solvers.sdp_ipm import StopReason, solve_ipm
from verify.solvers.sdp_linalg import (
    ArrowFactor,
    Completed,
    Pattern,
    lanczos_min,
    max_completable_step,
    schur_matrix,
    sym_product_pattern,
)
from verify.relax.sdp_model import Multipliers, dual_blocks


def _random_multipliers(rel, rng, triangle: bool) -> Multipliers:
    n0, n = rel.n0, rel.n_unstable
    return Multipliers(rng.uniform(0.5, 2, n0), rng.uniform(0.5, 2, n), rng.uniform(0, 1, n), rng.normal(0, 0.3, n),
                       float(rng.normal()), rng.uniform(0, 1, n) if triangle else np.zeros(0))


def _random_form(seed: int, k: int = 6, t: int = 9, n_rows: int = 7, partial_box: bool = False) -> ArrowSDP:
    rng = np.random.default_rng(seed)
    n = k + t
    box = np.concatenate([np.arange(1, 3), np.arange(4, n)]) if partial_box else np.arange(1, n)
    return ArrowSDP(k, rng.normal(size=n), rng.normal(size=(n_rows, n)), box, np.arange(n_rows), np.arange(4),
                    np.array([1, 2, 3, 5]))


def _spd(rng, n: int) -> np.ndarray:
    a = rng.normal(size=(n, n))
    return a @ a.T + np.eye(n)


@pytest.mark.parametrize("triangle", [False, True])
def test_form_matches_the_model_dual_matrix_and_bound(triangle):
    """The form's dual matrix C - A^T(y) is the model's M (the one the sound bound is computed from),
    reordered to [1, z, x]; multipliers round-trip; the form's sound bound is the model's."""
    rel, spec = small_relaxation(1, (4, 10, 6, 3))
    obj = rel.objective(spec.C[0], spec.d[0])
    m = _random_multipliers(rel, np.random.default_rng(0), triangle)
    form = rel.form(obj, triangle)
    y = rel.y_of(m, triangle)
    z = form.dual(y).dense()
    myy, b = dual_blocks(rel, obj, m)
    k = 1 + rel.n_unstable
    assert np.allclose(z[:k, :k], myy) and np.allclose(z[:k, k:], b)
    assert np.allclose(z[k:, k:], np.diag(m.mu_x))
    assert np.allclose(rel.multipliers_of(y, triangle).pack(), m.pack())
    assert np.allclose(form.slack_dual(y), np.concatenate([m.mu_z, m.mu_x, m.lam, m.kappa]))
    # the bound from the model's own blocks (Schur complement of the input block, trace bound 1 + N)
    s = myy - (b / m.mu_x) @ b.T
    own = m.gamma - m.mu_x.sum() - m.mu_z.sum() + k * min(0.0, np.linalg.eigvalsh(s)[0])
    assert form_bound(form, y) == pytest.approx(own, rel=1e-9, abs=1e-9)
    assert form_bound(form, y) <= own


@pytest.mark.parametrize("partial_box", [False, True])
def test_apply_is_the_adjoint_and_schur_matrix_is_brute_force(partial_box):
    form = _random_form(0, partial_box=partial_box)
    rng = np.random.default_rng(1)
    a = form.dense_constraints()
    y = rng.normal(size=form.m)
    w = form.adjoint(y).dense()
    assert np.allclose(w, sum(yi * ai for yi, ai in zip(y, a)))
    assert np.allclose(w[form.k :, form.k :], np.diag(np.diag(w[form.k :, form.k :])))  # the arrow
    x = _spd(rng, form.n)
    assert np.allclose(form.apply(x[: form.k], np.diag(x)[form.k :]), [np.sum(ai * x) for ai in a])
    xc = Completed.from_pattern(Pattern(x[: form.k], np.diag(x)[form.k :]))
    z = _spd(rng, form.n)
    z[form.k :, form.k :] = np.diag(np.diag(z)[form.k :] + 50.0)
    zi = ArrowFactor(Arrow(z[: form.k].copy(), np.diag(z)[form.k :].copy())).inverse()
    ratio = rng.uniform(0.1, 2, form.slack_con.size)
    xd, zid = xc.dense(), np.linalg.inv(z)
    brute = np.array([[np.trace(ai @ xd @ aj @ zid) for aj in a] for ai in a])
    brute[form.slack_con, form.slack_con] += ratio
    got = schur_matrix(form, xc, zi, ratio)
    assert np.allclose(np.tril(got), np.tril(brute), rtol=1e-10, atol=1e-9 * np.abs(brute).max())


def test_completion_is_the_max_determinant_one_and_its_algebra():
    """The completion agrees with the pattern, is PD, has an arrow inverse (maximum determinant), and its
    products, columns, pattern and whitening are the dense ones."""
    rng = np.random.default_rng(2)
    k, t = 6, 9
    x = _spd(rng, k + t)
    xc = Completed.from_pattern(Pattern(x[:k], np.diag(x)[k:]))
    xd = xc.dense()
    assert np.allclose(xd[:k], x[:k]) and np.allclose(np.diag(xd), np.diag(x)) and np.linalg.eigvalsh(xd)[0] > 0
    inv = np.linalg.inv(xd)[k:, k:]
    assert np.allclose(inv - np.diag(np.diag(inv)), 0.0, atol=1e-9)
    v = rng.normal(size=(k + t, 3))
    assert np.allclose(xc.apply(v), xd @ v) and np.allclose(xc.cols_h(), xd[:, :k])
    assert np.allclose(np.tril(xc.dense(lower_only=True)), np.tril(xd))
    pat = xc.pattern()
    assert np.allclose(pat.h, xd[:k]) and np.allclose(pat.d, np.diag(xd)[k:])
    lmat = np.column_stack([xc.whiten(e) for e in np.eye(k + t)])
    assert np.allclose(lmat @ xd @ lmat.T, np.eye(k + t))
    u, w = rng.normal(size=k + t), rng.normal(size=k + t)
    assert np.isclose(u @ xc.whiten(w), xc.whiten_t(u) @ w)
    bad = x.copy()
    bad[k, k] = x[k, :k] @ np.linalg.solve(x[:k, :k], x[:k, k]) - 1e-3  # a clique that is not PD
    with pytest.raises(np.linalg.LinAlgError):
        Completed.from_pattern(Pattern(bad[:k], np.diag(bad)[k:]))


def test_arrow_factor_inverse_whitening_and_products():
    rng = np.random.default_rng(2)
    k, n0 = 7, 30
    b = rng.normal(size=(k, n0))
    d = rng.uniform(0.5, 2, n0)
    yy = rng.normal(size=(k, k))
    yy = yy @ yy.T + b @ np.diag(1 / d) @ b.T + np.eye(k)
    z = np.block([[yy, b], [b.T, np.diag(d)]])
    za = Arrow(z[:k].copy(), d.copy())
    assert np.allclose(za.dense(), z)
    y = rng.normal(size=(k + n0, 5))
    assert np.allclose(za.apply(y), z @ y)
    f = ArrowFactor(za)
    assert np.allclose(f.inverse().dense(), np.linalg.inv(z))
    lmat = np.column_stack([f.whiten(e) for e in np.eye(k + n0)])  # L^{-1}
    assert np.allclose(lmat @ z @ lmat.T, np.eye(k + n0))
    v, u = rng.normal(size=k + n0), rng.normal(size=k + n0)
    assert np.isclose(u @ f.whiten(v), f.whiten_t(u) @ v)  # whiten_t is the adjoint


def test_symmetric_product_pattern_is_the_dense_one():
    """pattern(sym(A W B)) for A a completion or any symmetric operator, W an arrow, B = Z^{-1}."""
    form = _random_form(3)
    rng = np.random.default_rng(3)
    k, n = form.k, form.n
    x = _spd(rng, n)
    xc = Completed.from_pattern(Pattern(x[:k], np.diag(x)[k:]))
    z = _spd(rng, n)
    z[k:, k:] = np.diag(np.diag(z)[k:] + 50.0)
    zi = ArrowFactor(Arrow(z[:k].copy(), np.diag(z)[k:].copy())).inverse()
    w = form.adjoint(rng.normal(size=form.m))
    a = rng.normal(size=(n, n))
    a = a + a.T
    for a_apply, a_pat, a_dense in ((xc.apply, xc.pattern(), xc.dense()),
                                    (lambda v: a @ v, Pattern(a[:k], np.diag(a)[k:]), a)):
        ref = a_dense @ w.dense() @ np.linalg.inv(z)
        ref = 0.5 * (ref + ref.T)
        got = sym_product_pattern(a_apply, a_pat, w, zi)
        assert np.allclose(got.h, ref[:k]) and np.allclose(got.d, np.diag(ref)[k:])


def test_max_completable_step_is_exact():
    rng = np.random.default_rng(4)
    k, t = 6, 9
    x = _spd(rng, k + t)
    pat = Pattern(x[:k], np.diag(x)[k:])
    xc = Completed.from_pattern(pat)

    def completable(step: float, dx: Pattern) -> bool:
        try:
            Completed.from_pattern(pat.plus(dx, step))
            return True
        except np.linalg.LinAlgError:
            return False

    for _ in range(5):
        d = rng.normal(size=(k + t, k + t))
        d = d + d.T
        dx = Pattern(d[:k], np.diag(d)[k:])
        a = max_completable_step(xc, dx)
        assert completable(a * (1 - 1e-6), dx) and not completable(a * (1 + 1e-6), dx)
    assert max_completable_step(xc, pat) == np.inf  # along X itself every step keeps it completable


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
        form = rel.form(obj, triangle)
        ref = solve_cvxpy(form, 60.0, solver="CLARABEL")
        if ref.status is not SolverStatus.OPTIMAL:
            continue
        scale = 1.0 + abs(obj[0]) + np.abs(obj[1]).sum() + np.abs(obj[2]).sum()
        res = solve_ipm(form, strict_start(form, 0.02 * scale), time.perf_counter() + 60)
        tol = 1e-6 * max(1.0, abs(ref.primal))
        assert res.converged
        assert res.bound == form_bound(form, res.y)
        assert res.bound <= ref.primal + tol
        assert abs(res.bound - ref.primal) <= tol and abs(res.primal - ref.primal) <= tol


def test_ipm_stops_at_target_deadline_and_iteration_cap_with_a_sound_bound():
    rel, spec = small_relaxation(1, (4, 10, 6, 3))
    obj = rel.objective(spec.C[0], spec.d[0])
    form = rel.form(obj)
    ref = solve_cvxpy(form, 60.0, solver="CLARABEL")
    start = strict_start(form, 0.5)
    full = solve_ipm(form, start, time.perf_counter() + 60)
    hit = solve_ipm(form, start, time.perf_counter() + 60, target=full.bound - 0.05)
    assert hit.reason is StopReason.TARGET_REACHED and hit.bound > full.bound - 0.05 and hit.iterations < full.iterations
    out = solve_ipm(form, start, time.perf_counter() + 60, target=full.bound + 0.05)
    assert out.reason is StopReason.TARGET_OUT_OF_REACH and out.primal < full.bound + 0.05
    for res in (solve_ipm(form, start, time.perf_counter() - 1.0), solve_ipm(form, start, time.perf_counter() + 60,
                                                                              max_iter=3)):
        assert not res.converged and np.isfinite(res.bound)
        assert res.bound == form_bound(form, res.y) <= ref.primal + 1e-9


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
