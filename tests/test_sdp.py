"""SDP relaxation (Raghunathan et al. 2018): soundness against exact/sampled margins, backend agreement,
the independent certificate checker, and anytime soundness of the dual solver."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import small_box_case
from verify.bounds import preactivation_bounds
from verify.certificate import CertificateError, check_sdp_certificate
from verify.options import Options
from verify.relax.sdp import certify_sdp, sdp_margin_bounds
from verify.relax.sdp_model import SDPBuildError, build_relaxation, dual_bound
from verify.results import SolverStatus, Verdict
from verify.solvers.sdp_cvxpy import solve_cvxpy
from verify.solvers.sdp_dual import solve_form
from verify.spec import InputBox, OutputSpec, Property, SpecError, robustness_spec

CASES = [(0, (3, 8, 8, 3)), (1, (4, 10, 6, 3)), (2, (3, 6, 6, 6, 3)), (3, (5, 12, 3))]


_case = small_box_case


def _sampled_min(net, box, spec, n=20000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(box.lower, box.upper, size=(n, box.dim))
    corners = np.where(rng.random((n // 4, box.dim)) < 0.5, box.lower, box.upper)
    return spec.margins(net.forward(np.vstack([x, corners]))).min(axis=0)


def _exact(net, box, spec) -> np.ndarray | None:
    """The exact minimum of each margin as attained by the MILP's incumbent (a real input: an upper
    bound on the minimum, equal to it up to the MIP gap, which is checked)."""
    try:
        from verify.relax.milp import exact_group
    except ImportError:
        return None
    pre = preactivation_bounds(net, box, "crown")
    out = []
    for r in range(spec.n_margins):
        res = exact_group(net, box, spec.C[r : r + 1], spec.d[r : r + 1], pre, Options())
        if res.status is not SolverStatus.OPTIMAL:
            return None
        assert res.lower <= res.incumbent_value <= res.lower + 1e-4 * (1 + abs(res.incumbent_value))
        out.append(res.incumbent_value)
    return np.array(out)


@pytest.mark.parametrize("seed,dims", CASES)
def test_relaxation_contains_the_network(seed, dims):
    """Every real input gives a feasible rank-one point whose objective is the real margin."""
    net, box, spec = _case(seed, dims)
    rel = build_relaxation(net, box, preactivation_bounds(net, box, "crown"))
    rng = np.random.default_rng(1)
    for x in rng.uniform(box.lower, box.upper, size=(50, box.dim)):
        xh = (x[rel.free] - rel.x_center[rel.free]) / rel.x_radius
        h, pre = x[None], []
        for layer in net.layers[:-1]:
            s = layer.apply(h)[0]
            pre.append(s)
            h = np.maximum(s, 0.0)[None]
        s_unst = np.array([pre[i][j] for i, j in zip(rel.layer, rel.unit)])
        z = np.maximum(s_unst, 0.0)
        zh = z / rel.h - 1.0
        assert np.all(np.abs(np.concatenate([xh, zh])) <= 1 + 1e-9)
        assert np.allclose(rel.a0 + rel.ax @ xh + rel.az @ zh, s_unst, atol=1e-9)
        for r in range(spec.n_margins):
            o0, ox, oz = rel.objective(spec.C[r], spec.d[r])
            assert np.isclose(o0 + ox @ xh + oz @ zh, spec.margins(net.forward(x[None]))[0, r], atol=1e-9)


@pytest.mark.parametrize("seed,dims", CASES)
def test_sdp_bound_below_exact_and_samples(seed, dims):
    net, box, spec = _case(seed, dims)
    lower, status, certs = sdp_margin_bounds(net, box, spec, Options(bounds="crown"))
    sampled = _sampled_min(net, box, spec)
    exact = _exact(net, box, spec)
    assert status is SolverStatus.OPTIMAL
    assert np.all(np.isfinite(lower))
    assert np.all(lower <= sampled + 1e-9)
    if exact is not None:
        assert np.all(lower <= exact + 1e-9)
        assert np.all(exact <= sampled + 1e-9)
    for r, cert in enumerate(certs):
        assert cert is not None and abs(cert.claimed - lower[r]) <= 1e-6 * (1 + abs(lower[r]))


@pytest.mark.parametrize("seed,dims", CASES[:3])
def test_dual_backend_matches_clarabel_reference(seed, dims):
    net, box, spec = _case(seed, dims)
    rel = build_relaxation(net, box, preactivation_bounds(net, box, "interval"))
    for r in range(spec.n_margins):
        form = rel.form(rel.objective(spec.C[r], spec.d[r]))
        ref = solve_cvxpy(form, 60.0, solver="CLARABEL")
        if ref.status is not SolverStatus.OPTIMAL:
            continue
        ours = solve_form(form, 60.0, 300)
        assert ours.status is SolverStatus.OPTIMAL
        assert abs(ours.bound - ref.primal) <= 1e-3 * max(1.0, abs(ref.primal))
        assert ours.bound <= ref.primal + 1e-6 * max(1.0, abs(ref.primal))  # a dual bound never beats the optimum
        assert ref.bound <= ref.primal + 1e-6 * max(1.0, abs(ref.primal))


def test_dual_bound_is_sound_at_every_iteration():
    net, box, spec = _case(2, (3, 6, 6, 6, 3))
    rel = build_relaxation(net, box, preactivation_bounds(net, box, "interval"))
    exact = _exact(net, box, spec)
    truth = exact if exact is not None else _sampled_min(net, box, spec)
    form = rel.form(rel.objective(spec.C[0], spec.d[0]))
    values = [solve_form(form, 60.0, k).bound for k in (1, 2, 4, 8, 16, 32, 64)]
    assert all(np.isfinite(v) and v <= truth[0] + 1e-9 for v in values)
    assert values[-1] > values[0]  # and it improves


def test_checker_rejects_tampered_multipliers():
    net, box, spec = _case(0, (3, 8, 8, 3))
    lower, _, certs = sdp_margin_bounds(net, box, spec, Options(bounds="crown"))
    exact = _exact(net, box, spec)
    truth = exact if exact is not None else _sampled_min(net, box, spec)
    cert = certs[0]
    assert check_sdp_certificate(net, box, cert.c, cert.d, cert) == pytest.approx(lower[0], abs=1e-12)
    rng = np.random.default_rng(0)
    tampered = [
        dataclasses.replace(cert, nu=cert.nu * 1.5 + 0.5),
        dataclasses.replace(cert, gamma=cert.gamma + 1.0),
        dataclasses.replace(cert, mu_z=cert.mu_z * 0.5),
        dataclasses.replace(cert, lam=cert.lam + rng.uniform(0, 1, cert.lam.shape)),
        dataclasses.replace(cert, mu_x=np.zeros_like(cert.mu_x)),
    ]
    for bad in tampered:
        value = check_sdp_certificate(net, box, bad.c, bad.d, bad)
        assert value <= truth[0] + 1e-9  # whatever the multipliers, never above the true minimum
        assert value < bad.claimed - 1e-6  # and it disagrees with the claimed value
    assert check_sdp_certificate(net, box, cert.c, cert.d, dataclasses.replace(cert, nu=cert.nu * np.nan)) == -np.inf
    with pytest.raises(CertificateError):
        check_sdp_certificate(net, box, spec.C[1], spec.d[1], cert)  # made for another row
    wrong = tuple(u - 100.0 for u in cert.hidden_upper)
    with pytest.raises(CertificateError):
        check_sdp_certificate(net, box, cert.c, cert.d, dataclasses.replace(cert, hidden_upper=wrong))


def test_rounding_allowance_keeps_checked_below_claimed_at_optimum():
    net, box, spec = _case(1, (4, 10, 6, 3))
    rel = build_relaxation(net, box, preactivation_bounds(net, box, "crown"))
    obj = rel.objective(spec.C[0], spec.d[0])
    sol = solve_form(rel.form(obj), 60.0, 300)
    assert dual_bound(rel, obj, rel.multipliers_of(sol.y)) == pytest.approx(sol.bound)


def test_certify_sdp_verdicts_agree_with_sampling():
    seen = set()
    for seed, dims in CASES:
        for radius in (0.02, 0.2):
            net, box, spec = _case(seed, dims, radius)
            res = certify_sdp(net, Property(box, spec), Options())
            seen.add(res.verdict)
            sampled = _sampled_min(net, box, spec, n=5000)
            if res.verdict is Verdict.CERTIFIED:
                assert np.all(sampled > 0)
                assert all(c is None or c.claimed > 0 or res.margin_bounds[i] <= 0
                           for i, c in enumerate(res.extra["certificates"]))
            assert res.verdict in (Verdict.CERTIFIED, Verdict.UNKNOWN, Verdict.FALSIFIED)
    assert Verdict.CERTIFIED in seen


def test_falsified_at_the_centre():
    net, box, spec = _case(0, (3, 8, 8, 3))
    wrong = robustness_spec((spec.label + 1) % 3, 3)
    res = certify_sdp(net, Property(box, wrong), Options())
    assert res.verdict is Verdict.FALSIFIED
    assert wrong.violated(net.forward(res.counterexample[None]))[0]


def test_bad_input_errors():
    net, box, spec = _case(0, (3, 8, 8, 3))
    with pytest.raises(ValueError, match="logit columns"):
        sdp_margin_bounds(net, box, OutputSpec(np.ones((1, 4)), np.zeros(1), ((0,),)), Options())
    with pytest.raises(SDPBuildError, match="input box"):
        build_relaxation(net, InputBox(np.zeros(2), np.ones(2)), preactivation_bounds(net, box, "interval"))


def test_cvxpy_backend_through_the_api():
    net, box, spec = _case(3, (5, 12, 3))
    a, _, _ = sdp_margin_bounds(net, box, spec, Options(sdp_backend="cvxpy"))
    b, _, _ = sdp_margin_bounds(net, box, spec, Options(sdp_backend="dual"))
    assert np.allclose(a, b, atol=1e-3)
    assert np.all(a <= _sampled_min(net, box, spec) + 1e-9)


@pytest.mark.parametrize("seed,dims", CASES)
def test_sdp_with_triangle_cuts_at_least_as_tight_as_lp(seed, dims):
    lp_mod = pytest.importorskip("verify.relax.lp", reason="LP module not available")
    net, box, spec = _case(seed, dims)
    opts = Options(bounds="crown", sdp_triangle=True)
    lp, lp_status, _ = lp_mod.lp_margin_bounds(net, box, spec, opts)
    tri, status, certs = sdp_margin_bounds(net, box, spec, opts)
    plain, _, _ = sdp_margin_bounds(net, box, spec, opts.with_(sdp_triangle=False))
    assert status is SolverStatus.OPTIMAL and lp_status is SolverStatus.OPTIMAL
    tol = 1e-5 * (1 + np.abs(lp))
    assert np.all(tri >= lp - tol)
    assert np.all(tri >= plain - 1e-5 * (1 + np.abs(plain)))
    assert np.all(tri <= _sampled_min(net, box, spec) + 1e-9)
    assert all(c is not None and c.kappa.size == c.lam.size for c in certs)


def test_checker_with_triangle_multipliers():
    net, box, spec = _case(1, (4, 10, 6, 3))
    lower, _, certs = sdp_margin_bounds(net, box, spec, Options(sdp_triangle=True))
    cert = certs[1]
    truth = _sampled_min(net, box, spec)
    assert check_sdp_certificate(net, box, cert.c, cert.d, cert) == pytest.approx(lower[1], abs=1e-12)
    for bad in (dataclasses.replace(cert, kappa=cert.kappa * 3 + 0.1), dataclasses.replace(cert, kappa=np.zeros(0))):
        value = check_sdp_certificate(net, box, bad.c, bad.d, bad)
        assert value <= truth[1] + 1e-9
    with pytest.raises(CertificateError):
        check_sdp_certificate(net, box, cert.c, cert.d, dataclasses.replace(cert, kappa=np.ones(2)))


def test_parallel_margins_match_sequential():
    """sdp_workers=2 solves the same rows to the same checked bounds (and the certify mode agrees)."""
    net, box, spec = _case(1, (4, 10, 6, 3))
    seq, _, _ = sdp_margin_bounds(net, box, spec, Options())
    par, status, certs = sdp_margin_bounds(net, box, spec, Options(sdp_workers=2))
    assert status is SolverStatus.OPTIMAL and all(c is not None for c in certs)
    assert np.allclose(par, seq, rtol=0, atol=1e-9)
    prop = Property(box, spec)
    assert certify_sdp(net, prop, Options(sdp_workers=2)).verdict is certify_sdp(net, prop, Options()).verdict
    with pytest.raises(ValueError, match="sdp_workers"):
        Options(sdp_workers=0)


def test_parallel_certify_mode_is_reproducible_when_a_group_fails():
    """Certify mode with a failing group: 2 workers give exactly the sequential rows, bounds and skips."""
    net, box, spec = _case(1, (4, 10, 6, 3), radius=0.45)
    runs = [sdp_margin_bounds(net, box, spec, Options(sdp_workers=w), target=0.0, stop_on_failed_group=True)
            for w in (1, 2)]
    (seq, st1, c1), (par, st2, c2) = runs
    assert not spec.holds(seq)  # the case does fail
    assert [c is None for c in c1] == [c is None for c in c2] and np.array_equal(seq, par) and st1 is st2


def test_non_finite_spec_is_a_clear_error():
    _, _, spec = _case(0, (3, 8, 8, 3))
    with pytest.raises(SpecError, match="non-finite"):
        OutputSpec(spec.C, np.where(np.arange(spec.n_margins) == 0, np.inf, spec.d), spec.groups, spec.label)
    with pytest.raises(SpecError, match="non-finite"):
        OutputSpec(np.full_like(spec.C, np.nan), spec.d, spec.groups, spec.label)


@pytest.mark.parametrize("seed,dims", CASES)
def test_default_sdp_never_below_alpha_crown_or_the_lp_on_its_bounds(seed, dims):
    """Default options (alpha-CROWN pre-activation bounds, triangle cuts): every row's checked SDP bound is at
    least the alpha-CROWN margin bound and the triangle LP on the same bounds (up to solver tolerance), and
    below the sampled minimum."""
    from verify.bounds.method import certify_batch
    from verify.relax.lp import lp_margin_bounds

    net, box, spec = _case(seed, dims)
    opts = Options()
    pre = preactivation_bounds(net, box, "alpha-crown", opts)
    alpha = certify_batch(net, box.lower[None], box.upper[None], spec.C, spec.d, "alpha-crown", opts)[0].numpy()
    lp, _, _ = lp_margin_bounds(net, box, spec, opts.with_(bounds="alpha-crown"), pre)
    sdp, status, certs = sdp_margin_bounds(net, box, spec, opts)
    assert status is SolverStatus.OPTIMAL and all(c is not None and c.kappa.size for c in certs)
    tol = 1e-6 * (1 + np.abs(sdp))
    assert np.all(sdp >= alpha - tol) and np.all(sdp >= lp - tol)
    assert np.all(sdp <= _sampled_min(net, box, spec) + 1e-9)


def test_known_bounds_and_a_subset_of_rows():
    """known lower bounds are never lost; rows not asked for are not solved; in certify mode a group already
    proved by known bounds is skipped."""
    net, box, spec = _case(1, (4, 10, 6, 3))
    full, _, _ = sdp_margin_bounds(net, box, spec, Options())
    known = np.array([full[0] + 1.0, -np.inf])
    got, _, certs = sdp_margin_bounds(net, box, spec, Options(), known=known)
    assert got[0] == known[0] and got[1] == pytest.approx(full[1], abs=1e-6)
    part, _, certs = sdp_margin_bounds(net, box, spec, Options(), rows=[1])
    assert certs[0] is None and part[0] == -np.inf and part[1] == pytest.approx(full[1], abs=1e-6)
    proved = np.array([0.5, np.nan])
    res, status, certs = sdp_margin_bounds(net, box, OutputSpec(spec.C[:1], spec.d[:1], ((0,),)), Options(),
                                           known=proved[:1], target=0.0)
    assert res[0] == 0.5 and certs[0] is None and status is SolverStatus.NOT_RUN
    with pytest.raises(ValueError, match="known bounds"):
        sdp_margin_bounds(net, box, spec, Options(), known=np.zeros(3))


def test_zero_margin_row_and_no_unstable_neuron():
    """A margin row with C = 0 is the constant d (bound d up to rounding); a box so small that no neuron is
    unstable makes the network affine there and the SDP exact."""
    net, box, spec = _case(2, (3, 6, 6, 6, 3))
    zero = OutputSpec(np.zeros((1, 3)), np.array([0.25]), ((0,),))
    lower, status, _ = sdp_margin_bounds(net, box, zero, Options())
    assert status is SolverStatus.OPTIMAL and 0.25 - 1e-9 <= lower[0] + 1e-6 and lower[0] <= 0.25
    tiny = InputBox(box.center - 1e-6, box.center + 1e-6)
    assert all(np.all((l >= 0) | (u <= 0)) for l, u in preactivation_bounds(net, tiny, "crown")[:-1])
    exact, status, _ = sdp_margin_bounds(net, tiny, spec, Options())
    sampled = _sampled_min(net, tiny, spec, n=2000)
    assert status is SolverStatus.OPTIMAL and np.all(exact <= sampled + 1e-12) and np.all(exact >= sampled - 1e-5)


def test_overflow_in_the_solver_is_unknown_with_the_message():
    """Weights so large that the solver's numbers overflow: UNKNOWN (never CERTIFIED), bound -inf, and the
    message says what the solver hit."""
    from verify.network import Affine, Network, ReLU

    net, box, spec = _case(1, (4, 10, 6, 3))
    ops: list = []
    for i, layer in enumerate(net.layers):
        s = 1e160 if i == 1 else 1.0
        ops += [Affine(layer.dense_weight() * s, layer.bias * s, f"fc{i}"), ReLU()]
    big = Network.from_ops(ops[:-1], (4,), (0.0, 1.0))
    res = certify_sdp(big, Property(box, spec), Options(sdp_bounds="crown"))
    assert res.verdict is Verdict.UNKNOWN and res.bound == -np.inf
    assert res.status is SolverStatus.NUMERICAL_ERROR and "solver:" in res.message


def test_cascade_hooks_rows_and_predicted_seconds():
    """sdp_rows solves only the rows asked for (the others keep the known bounds) and certifies like the full
    method; the predicted time grows with the unstable neurons and the margins, and is 0 for no margin."""
    from verify.relax.sdp import sdp_rows, sdp_seconds
    from verify.relax.sdp_cost import predicted_seconds

    net, box, spec = _case(1, (4, 10, 6, 3))
    pre = preactivation_bounds(net, box, "alpha-crown")
    known = np.array([0.123, -np.inf])
    lower, status, certs = sdp_rows(net, box, spec, [1], pre, Options(), known=known, target=None)
    full, _, _ = sdp_margin_bounds(net, box, spec, Options(), pre)
    assert lower[0] == 0.123 and certs[0] is None and lower[1] == pytest.approx(full[1], abs=1e-6)
    assert status is SolverStatus.OPTIMAL
    t = sdp_seconds(net, box, pre, rows=2)
    assert 0 < t < 60
    assert predicted_seconds(784, 200, 9) > predicted_seconds(784, 100, 9) > predicted_seconds(784, 100, 1) > 0
    assert predicted_seconds(784, 100, 9, certify=True) < predicted_seconds(784, 100, 9)
    assert predicted_seconds(784, 100, 0) == 0.0


def test_cli_default_methods_include_the_sdp_where_it_is_predicted_to_fit():
    """The shipped digits MLP includes the SDP by default; a wide random network at a large eps does not
    (its predicted time is far beyond the budget); a tiny budget excludes it everywhere."""
    from pathlib import Path

    from verify.cli_run import default_methods
    from verify.data import load_dataset
    from verify.load import load_model

    digits = load_model(Path(__file__).resolve().parents[1] / "models" / "digits_mlp.pt").network
    x, _ = load_dataset("digits", 1, 0, digits.in_dim)
    assert "sdp" in default_methods(digits, x[0], 0.05, Options())
    assert "sdp" not in default_methods(digits, x[0], 0.05, Options(timeout=1e-4))
    wide = _case(0, (784, 1500, 1500, 10))[0]
    assert "sdp" not in default_methods(wide, np.full(784, 0.5), 0.3, Options())
    assert "sdp" not in default_methods(digits)  # no input to judge from: the cheap set
