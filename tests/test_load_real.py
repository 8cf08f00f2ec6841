"""The real networks under ../shared/data load faithfully: same outputs as their source runtime
(torch / onnxruntime / the npz arrays) on real MNIST test images, and the published accuracies
through OUR forward pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from conftest import mnist_test, shared_path
from verify.load import LoadedModel, LoadError, load_model
from verify.load.onnx import float64_reference

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _full_test() -> tuple[np.ndarray, np.ndarray]:
    d = np.load(shared_path("mnist", "mnist_test.npz"))
    return d["x"].reshape(len(d["x"]), -1).astype(np.float64) / 255.0, d["y"].astype(np.int64)


def _matches_reference(m: LoadedModel, x: np.ndarray, rel: float = 1e-5) -> float:
    ours = m.network.forward(x)
    ref = m.reference(x)
    diff = float(np.max(np.abs(ours - ref)))
    assert diff <= rel * max(1.0, float(np.max(np.abs(ref)))), diff
    return diff


def _torch_float64(module: nn.Module, x: np.ndarray, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    with torch.no_grad():
        t = (torch.tensor(x, dtype=torch.float64).reshape(len(x), *shape) - mean) / std
        return module.double().eval()(t).numpy()


@pytest.mark.parametrize("name,acc", [("grad_nn", 0.9582), ("lp_nn", 0.9127), ("pgd_nn", 0.9753)])
def test_rsl18_npz(name: str, acc: float) -> None:
    m = load_model(shared_path("nets", "rsl18", f"{name}.npz"))
    x, y = _full_test()
    _matches_reference(m, x[:200], rel=1e-12)  # numpy float64 reference
    # independent of our loader: the raw arrays, (out, in) layout per the file's meta
    d = np.load(shared_path("nets", "rsl18", f"{name}.npz"))
    h = x[:200]
    n = sum(1 for k in d.files if k.startswith("W"))
    for i in range(n):
        h = h @ d[f"W{i}"].astype(np.float64).T + d[f"b{i}"]
        h = np.maximum(h, 0) if i < n - 1 else h
    np.testing.assert_allclose(m.network.forward(x[:200]), h, atol=1e-12)
    assert np.mean(m.network.forward(x).argmax(1) == y) == pytest.approx(acc, abs=5e-5)  # README, full test set


@pytest.mark.parametrize("name,correct", [("mnist_6_100_nat", 960), ("mnist_6_200_nat", 972), ("mnist_9_100_nat", 947)])
def test_eran_state_dicts(name: str, correct: int) -> None:
    path = shared_path("nets", "eran", f"{name}.pth")
    m = load_model(path)
    assert "guessed architecture" in m.source and "--arch" in m.source
    assert any("guessed" in note for note in m.network.notes)
    x, y = mnist_test(1000)
    _matches_reference(m, x)
    assert int(np.sum(m.network.forward(x).argmax(1) == y)) == correct  # README: first 1000 test images
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert int(stored["acc"]) == correct
    # independent float64 torch model built from the README's description (Linear at keys 1, 3, 5, ...)
    sd = stored["state_dict"][0]
    n = len(sd) // 2
    seq: list[nn.Module] = [nn.Identity()]
    for i in range(n):
        w = sd[f"{2 * i + 1}.weight"]
        seq += [nn.Linear(w.shape[1], w.shape[0]), nn.ReLU()]
    module = nn.Sequential(*seq[:-1])
    module.load_state_dict(sd)
    np.testing.assert_allclose(m.network.forward(x[:100]), _torch_float64(module, x[:100], (784,)), atol=1e-9)


@pytest.mark.parametrize("k,acc", [(2, 0.9808), (4, 0.9764), (6, 0.9689)])
def test_mnistfc_onnx(k: int, acc: float) -> None:
    m = load_model(shared_path("vnncomp2021", "mnistfc", f"mnist-net_256x{k}.onnx"))
    assert m.network.input_shape == (784, 1)  # ONNX input [1, 784, 1], batch dim dropped
    assert m.network.describe() == "784-" + "-".join(["256"] * k) + "-10"
    x, y = _full_test()
    _matches_reference(m, x[:300])
    # independent float64 evaluation of the same graph by onnx's reference evaluator
    path = shared_path("vnncomp2021", "mnistfc", f"mnist-net_256x{k}.onnx")
    exact = float64_reference(onnx.load(str(path)), "0", (784, 1), True, None)
    assert exact is not None
    np.testing.assert_allclose(m.network.forward(x[:50]), exact(x[:50]), atol=1e-9)
    # the benchmark readme's accuracies are on the full 10,000-image test set
    assert np.mean(m.network.forward(x).argmax(1) == y) == pytest.approx(acc, abs=5e-5)


def _conv_small() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(800, 100), nn.ReLU(), nn.Linear(100, 10),
    )


def test_conv_small_normalized() -> None:
    path = shared_path("nets", "conv", "mnist_conv_small_nat.pth")
    m = load_model(path, input_shape=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD)
    assert "stride 2, padding 0" in m.source and "guessed" in m.source
    x, y = mnist_test(1000)
    _matches_reference(m, x)
    # the architecture from the README, independently of the loader's guess, in float64
    module = _conv_small()
    stored = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(stored["state_dict"][0])
    np.testing.assert_allclose(
        m.network.forward(x[:100]), _torch_float64(module, x[:100], (1, 28, 28), MNIST_MEAN, MNIST_STD), atol=1e-9
    )
    # normalization folded: the network takes raw [0, 1] pixels; accuracy equals the file's 'acc' (980 of 1000)
    assert int(np.sum(m.network.forward(x).argmax(1) == y)) == int(stored["acc"]) == 980


def test_conv_small_needs_input_shape() -> None:
    with pytest.raises(LoadError, match=r"needs the input shape \(C, H, W\)"):
        load_model(shared_path("nets", "conv", "mnist_conv_small_nat.pth"))


def test_conv_small_with_arch_file(tmp_path) -> None:
    arch = tmp_path / "arch.py"
    arch.write_text(
        "import torch.nn as nn\n"
        "def conv_small():\n"
        "    return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(),\n"
        "                         nn.Flatten(), nn.Linear(800, 100), nn.ReLU(), nn.Linear(100, 10))\n"
        "def wrong():\n"
        "    return nn.Sequential(nn.Linear(784, 10))\n"
    )
    path = shared_path("nets", "conv", "mnist_conv_small_nat.pth")
    m = load_model(path, arch=f"{arch}:conv_small", input_shape=(1, 28, 28), mean=MNIST_MEAN, std=MNIST_STD)
    assert "guessed" not in m.source
    x, _ = mnist_test(50)
    _matches_reference(m, x)
    with pytest.raises(LoadError, match="does not fit"):
        load_model(path, arch=f"{arch}:wrong")


def test_cnn_a_adv() -> None:
    path = shared_path("nets", "conv", "mnist_cnn_a_adv.model")
    m = load_model(path, input_shape=(1, 28, 28))
    assert "stride 2, padding 1" in m.source
    x, y = mnist_test(500)
    _matches_reference(m, x)
    module = nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10),
    )
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    np.testing.assert_allclose(m.network.forward(x[:100]), _torch_float64(module, x[:100], (1, 28, 28)), atol=1e-9)
    assert np.mean(m.network.forward(x).argmax(1) == y) > 0.9  # an adversarially trained MNIST model
