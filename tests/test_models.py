"""The shipped digits model: trained reproducibly by models/train.py, with inputs that ship with the package
(scikit-learn's digits), and showing what the README's first command promises: inputs the SDP certifies where
the LP (with the same bounds) does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from verify.data import load_dataset
from verify.load import load_model
from verify.methods import run_method
from verify.options import Options
from verify.results import Verdict
from verify.spec import robustness_property

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_mlp.pt"


def test_digits_model_ships_its_inputs_and_training_record() -> None:
    loaded = load_model(DIGITS)
    meta = torch.load(DIGITS, weights_only=True)["verify_meta"]
    assert meta["data"] == "digits" and meta["seed"] == 0 and meta["trained_eps"] > 0
    x, y = load_dataset(loaded.meta.get("data"), 20, 0, loaded.network.in_dim)
    assert x.shape == (20, 64) and 0 <= x.min() and x.max() <= 1


def test_sdp_certifies_an_input_the_lp_leaves_open_at_eps_0_1() -> None:
    """README command 1's claim, on the first 20 test inputs (stops at the first such input)."""
    loaded = load_model(DIGITS)
    net = loaded.network
    x, y = load_dataset("digits", 20, 0, net.in_dim)
    for i in range(20):
        prop = robustness_property(x[i], int(y[i]), 0.1, (net.domain_lower, net.domain_upper), net.out_dim)
        if run_method("sdp", net, prop, Options(), loaded.reference).verdict is not Verdict.CERTIFIED:
            continue
        if run_method("lp", net, prop, Options(), loaded.reference).verdict is not Verdict.CERTIFIED:
            return
    pytest.fail("no input among the first 20 is certified by the SDP and not by the LP at eps 0.1")


@pytest.mark.slow
def test_training_reproduces_the_shipped_weights(tmp_path: Path) -> None:
    """models/train.py (seed 0, one thread, deterministic kernels) gives bit-identical weights (same torch build
    and kind of CPU as the one that trained it: torch 2.13.0 CPU, x86_64)."""
    out = tmp_path / "digits.pt"
    done = subprocess.run([sys.executable, str(ROOT / "models" / "train.py"), "--out", str(out)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = torch.load(out, weights_only=True)
    shipped = torch.load(DIGITS, weights_only=True)
    assert fresh["verify_meta"] == shipped["verify_meta"]
    for k, v in shipped["state_dict"].items():
        assert torch.equal(fresh["state_dict"][k], v), k
