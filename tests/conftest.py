"""Shared test fixtures: real data under ../shared/data (skipped with a reason where absent), random nets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from verify.network import Affine, Network, ReLU

# Tests are small: one thread avoids OpenMP contention on the shared 2-core machines (and is faster there).
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (the ../shared/data folder beside the repo)")
    return p


def random_network(seed: int, dims: tuple[int, ...] = (4, 8, 8, 3), scale: float = 1.0) -> Network:
    """A seeded random MLP with the given layer widths and input domain [0, 1]."""
    rng = np.random.default_rng(seed)
    ops: list = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        ops.append(Affine(rng.normal(size=(b, a)) * scale / np.sqrt(a), rng.normal(size=b) * 0.1 * scale, f"fc{i}"))
        ops.append(ReLU())
    return Network.from_ops(ops[:-1], (dims[0],), (0.0, 1.0), name=f"random{seed}")


def mnist_test(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` MNIST test images flattened to (n, 784) in [0, 1] and their labels."""
    d = np.load(shared_path("mnist", "mnist_test.npz"))
    return d["x"][:n].reshape(n, -1).astype(np.float64) / 255.0, d["y"][:n].astype(np.int64)


def rsl18(name: str) -> Network:
    """One of the SDP paper's networks (grad_nn, lp_nn, pgd_nn) read directly from its npz."""
    d = np.load(shared_path("nets", "rsl18", f"{name}.npz"))
    n_layers = sum(1 for k in d.files if k.startswith("W"))
    ops: list = []
    for i in range(n_layers):
        ops += [Affine(d[f"W{i}"].astype(np.float64), d[f"b{i}"].astype(np.float64), f"fc{i}"), ReLU()]
    return Network.from_ops(ops[:-1], (784,), (0.0, 1.0), name=name)


@pytest.fixture
def small_net() -> Network:
    return random_network(0)


def small_box_case(seed: int, dims: tuple[int, ...], radius: float = 0.2):  # type: ignore[no-untyped-def]
    """``(net, box, spec)``: a random network, a box of ``radius`` (clipped to [0, 1]) around a random
    point, and the robustness spec of the point's predicted class."""
    from verify.spec import InputBox, robustness_spec

    net = random_network(seed, dims)
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0.25, 0.75, dims[0])
    box = InputBox(np.clip(x0 - radius, 0, 1), np.clip(x0 + radius, 0, 1))
    return net, box, robustness_spec(int(np.argmax(net.forward(x0))), dims[-1])


def small_relaxation(seed: int, dims: tuple[int, ...], radius: float = 0.2):  # type: ignore[no-untyped-def]
    """``(rel, spec)``: the SDP relaxation (interval bounds) of :func:`small_box_case`."""
    from verify.bounds import preactivation_bounds
    from verify.relax.sdp_model import build_relaxation

    net, box, spec = small_box_case(seed, dims, radius)
    return build_relaxation(net, box, preactivation_bounds(net, box, "interval")), spec


def cli_main(*args: str) -> tuple[int, str, str]:
    """``verify.cli.main(args)`` in this process: ``(exit code, stdout, stderr)`` (argparse exits included)."""
    import contextlib
    import io

    from verify.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def assert_usage_error(result: tuple[int, str, str], *needles: str) -> str:
    """Exit code 2, nothing on stdout, exactly one ``verify: error:`` line (mentioning each needle) on stderr."""
    code, out, err = result
    assert code == 2, err
    assert "Traceback" not in err and out == "", (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("verify: error:"), err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]
