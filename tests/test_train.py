"""The torch-only training API: sound, differentiable, consistent with the verification path, no solver import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import verify
from verify.bounds.method import certify_with_bounds
from verify.load import from_module
from verify.options import Options
from verify.results import Verdict
from verify.spec import robustness_property
from verify.train import margin_matrix, module_chain

ROOT = Path(__file__).resolve().parents[1]


def small_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))


def small_conv(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(27, 5))


def batch(seed: int, shape: tuple[int, ...], n: int = 6) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make,shape", [(small_mlp, (8,)), (small_conv, (1, 6, 6))])
def test_module_chain_matches_model(make, shape) -> None:
    model = make().double()
    x = batch(1, shape).double()
    h = x.reshape(len(x), -1)
    chain = module_chain(model, shape)
    for i, (w, b) in enumerate(chain):
        h = h @ w.T + b
        if i < len(chain) - 1:
            h = torch.relu(h)
    assert torch.allclose(h, model(x), atol=1e-10)


def test_margin_matrix_rows() -> None:
    y = torch.tensor([0, 3, 1])
    C = margin_matrix(y, 4, torch.float64)
    z = torch.randn(3, 4, dtype=torch.float64)
    m = torch.einsum("nmk,nk->nm", C, z)
    for i in range(3):
        others = [j for j in range(4) if j != int(y[i])]
        assert torch.allclose(m[i], z[i, int(y[i])] - z[i, others])


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown-output", "alpha-crown"])
@pytest.mark.parametrize("make,shape", [(small_mlp, (8,)), (small_conv, (1, 6, 6))])
def test_certify_is_sound_on_samples(method, make, shape) -> None:
    model = make()
    x = batch(2, shape)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.05
    res = verify.certify(model, x, y, eps, method=method)
    assert res.lower_bounds.shape == (len(x), 3 if make is small_mlp else 4)
    gen = torch.Generator().manual_seed(3)
    C = margin_matrix(y, res.lower_bounds.shape[1] + 1, torch.float64)
    for _ in range(20):
        pts = (x + eps * (2 * torch.rand(x.shape, generator=gen) - 1)).clamp(0, 1).double()
        with torch.no_grad():
            margins = torch.einsum("nmk,nk->nm", C, model.double()(pts))
        model.float()
        assert (res.lower_bounds <= margins + 1e-9).all()
    for v, row in zip(res.verdicts, res.lower_bounds):
        assert (v is Verdict.CERTIFIED) == bool((row > 0).all())


@pytest.mark.parametrize("method", ["crown", "alpha-crown-output", "alpha-crown"])
def test_certify_agrees_with_verification_path(method: str) -> None:
    """One name, one variant: the batched training API and the per-property method give the same bounds
    (issue 12 item 9: certify's "alpha-crown" kept the hidden-layer bounds at CROWN's)."""
    model = small_mlp().double()
    x = batch(4, (8,))
    with torch.no_grad():
        y = model(x.double()).argmax(1)
    opts = Options(alpha_steps=10)
    res = verify.certify(model, x, y, 0.1, method=method, options=opts)
    net = from_module(model, (8,)).network
    for i in range(len(x)):
        prop = robustness_property(x[i].double().numpy(), int(y[i]), 0.1, (net.domain_lower, net.domain_upper), 4)
        direct = certify_with_bounds(net, prop, method, opts)
        assert np.allclose(direct.margin_bounds, res.lower_bounds[i].numpy(), atol=1e-7)


def test_robust_loss_is_differentiable_and_dominates_clean_loss() -> None:
    model = small_mlp()
    x = batch(5, (8,))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    for method in ("ibp", "crown"):
        model.zero_grad()
        loss = verify.robust_loss(model, x, y, 0.05, method=method)
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        clean = nn.functional.cross_entropy(model(x), y)
        assert float(loss.detach()) >= float(clean.detach()) - 1e-5
    with torch.no_grad():
        assert float(verify.robust_loss(model, x, y, 0.1, "ibp")) >= float(verify.robust_loss(model, x, y, 0.1, "crown")) - 1e-5


def test_verify_offline_report_matches_certify() -> None:
    model = small_mlp()
    x = batch(6, (8,), n=4)
    with torch.no_grad():
        y = model(x).argmax(1)
    report = verify.verify(model, x, y, 0.02, methods=("attack", "crown", "lp"))
    crown = sorted((r for r in report.records if r.method == "crown"), key=lambda r: r.index)
    direct = verify.certify(model, x, y, 0.02, method="crown")
    assert [r.verdict for r in crown] == list(direct.verdicts)
    lp = {r.index: r for r in report.records if r.method == "lp"}
    for r in crown:  # LP with CROWN pre-activation bounds is at least as tight as CROWN
        assert lp[r.index].bound >= r.bound - 1e-6
    assert model.training  # the caller's model is left in its mode


def test_training_path_imports_no_solver() -> None:
    code = (
        "import sys, torch, verify\n"
        "m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))\n"
        "x = torch.rand(5, 4); y = torch.zeros(5, dtype=torch.long)\n"
        "verify.certify(m, x, y, 0.1); verify.robust_loss(m, x, y, 0.1, 'crown').backward()\n"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('cvxpy', 'scs', 'clarabel', 'highspy')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_example_training_script_logs_library_results(monkeypatch) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import adversarial_training
    finally:
        sys.path.pop(0)
    calls: list[float] = []
    real = verify.certify

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        calls.append(res.certified_accuracy)
        return res

    monkeypatch.setattr(verify, "certify", spy)
    log = adversarial_training.main(["--epochs", "2", "--steps", "3", "--offline-every", "1", "--offline-n", "3",
                                     "--offline-methods", "attack,crown,lp"])
    assert [e["crown_certified"] for e in log] == calls
    assert all("offline_lp_certified" in e and 0.0 <= e["offline_lp_certified"] <= 1.0 for e in log)


def test_compare_example_runs_and_orders_bounds() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import compare_sdp_lp
    finally:
        sys.path.pop(0)
    report = compare_sdp_lp.main(["--n", "3", "--eps", "0.05"])
    by = {(r.index, r.method): r for r in report.records}
    for i in range(3):
        attack = by[(i, "attack")]
        for m in ("lp (interval bounds)", "lp (CROWN bounds)", "sdp (interval bounds)", "sdp (CROWN bounds)"):
            if by[(i, m)].status.value != "not_run":
                assert by[(i, m)].bound <= attack.bound + 1e-6  # sound bounds never exceed the attack's margin
        if by[(i, "lp (interval bounds)")].status.value != "not_run":  # CROWN bounds only tighten the LP
            assert by[(i, "lp (CROWN bounds)")].bound >= by[(i, "lp (interval bounds)")].bound - 1e-6
