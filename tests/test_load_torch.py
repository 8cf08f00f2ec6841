"""torch loaders: in-memory modules, state dict / TorchScript / pickle files, and their error messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from verify.load import LoadError, from_module, load_model
from verify.network import Network


def _randomize_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


def conv_net(dtype: torch.dtype = torch.float64) -> nn.Module:
    """A random nested Sequential with strided/padded/dilated convs, batch norms, dropout and identity."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Conv2d(4, 3, (3, 2), padding=(2, 1), dilation=2),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Sequential(nn.Linear(3 * 5 * 5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Identity()),
        nn.Linear(7, 3),
    )
    _randomize_bn(net)
    return net.to(dtype).eval()


def _torch_out(module: nn.Module, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    with torch.no_grad():
        return module(torch.tensor(x, dtype=torch.float64).reshape(len(x), *shape)).numpy()


def _inputs(n: int, d: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, d))


def test_nested_sequential_conv_bn_float64() -> None:
    net = conv_net()
    m = from_module(net, (2, 10, 9))
    x = _inputs(20, 180)
    np.testing.assert_allclose(m.network.forward(x), _torch_out(net, x, (2, 10, 9)), atol=1e-9, rtol=0)
    assert m.max_abs_diff <= 1e-9
    assert m.network.describe().endswith("-7-3")
    assert net[0][1].training is False  # the caller's module is untouched (still in eval mode)


def test_module_in_training_mode_is_converted_in_eval_mode() -> None:
    net = conv_net().train()
    m = from_module(net, (2, 10, 9))
    x = _inputs(5, 180)
    assert net.training  # a copy was switched to eval
    np.testing.assert_allclose(m.network.forward(x), _torch_out(conv_net(), x, (2, 10, 9)), atol=1e-9)


class Normalize(nn.Module):
    """ERAN / alpha-beta-CROWN style input normalization."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def test_normalize_layer_folded_eps_in_user_units() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(Normalize([0.4, 0.6], [0.2, 0.3]), nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    m = from_module(net, (2, 6, 6))
    x = _inputs(10, 72)
    with torch.no_grad():
        ref = net(torch.tensor(x, dtype=torch.float32).reshape(10, 2, 6, 6)).double().numpy()
    np.testing.assert_allclose(m.network.forward(x), ref, atol=1e-5)
    # the first layer acts on raw inputs: a unit change of pixel 0 (channel 0) is 1/0.2 in normalized units
    assert m.network.in_dim == 72 and np.all(m.network.domain_upper == 1.0)


def test_mean_std_arguments_folded() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    mean, std = np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 0.25
    m = from_module(net, (5,), mean=mean, std=std, domain=(-1.0, 2.0))
    x = _inputs(8, 5) * 3 - 1
    np.testing.assert_allclose(m.network.forward(x), _torch_out(net, (x - mean) / std, (5,)), atol=1e-12)
    assert np.all(m.network.domain_lower == -1.0) and np.all(m.network.domain_upper == 2.0)
    assert len(m.network.layers) == 2  # folded into the first layer, no extra layer


class Functional(nn.Module):
    """Not a Sequential: functional relu and dropout, view with x.size(0), a scalar normalization and a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(2 * 4 * 4, 6)
        self.fc2 = nn.Linear(6, 3)
        self.register_buffer("shift", torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.shift) * 2.0
        x = torch.relu(self.conv(x))
        x = x.view(x.size(0), -1)
        x = nn.functional.relu(self.fc1(x))
        x = nn.functional.dropout(x, 0.5, training=self.training)
        return self.fc2(x)


def test_fx_traced_module() -> None:
    net = Functional().double().eval()
    m = from_module(net, (1, 8, 8))
    x = _inputs(6, 64)
    np.testing.assert_allclose(m.network.forward(x), _torch_out(net, x, (1, 8, 8)), atol=1e-9)
    assert m.network.describe() == "64-32-6-3"


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)) + x)


def test_residual_is_rejected() -> None:
    with pytest.raises(LoadError, match="residual connections are not supported"):
        from_module(Residual(), (4,))


def test_unsupported_layer_names_type_and_position() -> None:
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Sigmoid()), nn.Linear(4, 2))
    with pytest.raises(LoadError, match=r"unsupported layer Sigmoid at position 3 \(0\.3\)"):
        from_module(net, (4,))


def test_unsupported_function_is_named() -> None:
    class Tanh(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.tanh(x))

    with pytest.raises(LoadError, match="unsupported operation tanh at position 0"):
        from_module(Tanh(), (3,))


def test_nan_weights_name_the_layer() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    with pytest.raises(LoadError, match=r"2 \(position 1\) has NaN or Inf weights"):
        from_module(net, (3,))


def test_layer_shape_mismatch() -> None:
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(LoadError, match="shape mismatch at layer 2: expects 4 input features"):
        from_module(net, (3,))


# --- files ---------------------------------------------------------------------------------------
def _mlp() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3))


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "eran_list"])
def test_state_dict_files_guess_linear_chain(tmp_path: Path, wrap: str) -> None:
    net = _mlp()
    sd = net.state_dict()
    obj = {"bare": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "eran_list": {"state_dict": [sd], "acc": torch.tensor(1)}}[wrap]
    path = tmp_path / "m.pth"
    torch.save(obj, path)
    m = load_model(path)
    assert "guessed architecture" in m.source and "--arch file.py:factory" in m.source
    x = _inputs(9, 6)
    np.testing.assert_allclose(m.network.forward(x), _torch_out(net.double(), x, (6,)), atol=1e-6)


def test_verify_meta_fills_defaults(tmp_path: Path) -> None:
    net = _mlp()
    meta = {"data": "digits", "domain": [-1.0, 1.0], "input_shape": [1, 6], "mean": 0.5, "std": 2.0}
    path = tmp_path / "m.pt"
    torch.save({"state_dict": net.state_dict(), "verify_meta": meta}, path)
    m = load_model(path)
    assert m.meta["data"] == "digits"
    assert m.network.input_shape == (1, 6)
    assert np.all(m.network.domain_lower == -1.0)
    x = _inputs(4, 6) * 2 - 1
    np.testing.assert_allclose(m.network.forward(x), _torch_out(net.double(), (x - 0.5) / 2.0, (6,)), atol=1e-6)


def test_arch_factory(tmp_path: Path) -> None:
    net = conv_net(torch.float32)
    path = tmp_path / "conv.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(LoadError, match="cannot guess the architecture from state dict entry"):
        load_model(path, input_shape=(2, 10, 9))  # batch-norm entries: no guess
    arch = tmp_path / "arch.py"
    arch.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom test_load_torch import conv_net\n")
    m = load_model(path, arch=f"{arch}:conv_net", input_shape=(2, 10, 9))
    x = _inputs(5, 180)
    np.testing.assert_allclose(m.network.forward(x), _torch_out(conv_net(), x, (2, 10, 9)), atol=1e-5)
    with pytest.raises(LoadError, match="has no function missing"):
        load_model(path, arch=f"{arch}:missing")
    with pytest.raises(LoadError, match="arch must look like 'file.py:factory'"):
        load_model(path, arch="arch.py")


def test_conv_state_dict_ambiguous_stride(tmp_path: Path) -> None:
    # two 3x3 convs on 9x9 -> linear of 2*1*1 inputs: stride 3/pad 0 and stride 3/pad 1 ... both fit
    sd = {
        "0.weight": torch.randn(2, 1, 3, 3), "0.bias": torch.randn(2),
        "2.weight": torch.randn(2, 2, 3, 3), "2.bias": torch.randn(2),
        "5.weight": torch.randn(3, 2), "5.bias": torch.randn(3),
    }
    path = tmp_path / "c.pth"
    torch.save(sd, path)
    with pytest.raises(LoadError, match="cannot infer the convolutions' stride/padding.*pass arch"):
        load_model(path, input_shape=(1, 9, 9))


def test_state_dict_shape_mismatch(tmp_path: Path) -> None:
    sd = {"0.weight": torch.randn(5, 6), "0.bias": torch.randn(5), "2.weight": torch.randn(3, 4), "2.bias": torch.randn(3)}
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(LoadError, match=r"shape mismatch between layers '0' \(5 outputs\) and '2' \(4 inputs\)"):
        load_model(path)


def test_state_dict_nan(tmp_path: Path) -> None:
    sd = _mlp().state_dict()
    sd["2.bias"][1] = float("inf")
    path = tmp_path / "nan.pth"
    torch.save(sd, path)
    with pytest.raises(LoadError, match=r"nan.pth: 2 \(position 1\) has NaN or Inf weights"):
        load_model(path)


def test_torchscript_scripted_and_traced(tmp_path: Path) -> None:
    net = conv_net()
    x = _inputs(7, 180)
    expected = _torch_out(net, x, (2, 10, 9))
    torch.jit.script(net).save(str(tmp_path / "s.pt"))
    torch.jit.trace(net, torch.zeros(1, 2, 10, 9, dtype=torch.float64)).save(str(tmp_path / "t.pt"))
    for name in ("s.pt", "t.pt"):
        m = load_model(tmp_path / name, input_shape=(2, 10, 9))
        assert "TorchScript" in m.source
        np.testing.assert_allclose(m.network.forward(x), expected, atol=1e-9)


def test_torchscript_functional_relu_is_caught(tmp_path: Path) -> None:
    class F(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    torch.jit.script(F()).save(str(tmp_path / "f.pt"))
    with pytest.raises(LoadError, match="does not match the source model"):
        load_model(tmp_path / "f.pt")


class Evil:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_not_executed(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save({"state_dict": Evil(str(marker))}, path)
    else:
        path.write_bytes(pickle.dumps(Evil(str(marker))))
    with pytest.raises(LoadError, match="pickled Python objects.*trust_pickle=True"):
        load_model(path)
    assert not marker.exists()
    with pytest.raises(LoadError):  # trusted: the code runs (and the result is not a model)
        load_model(path, trust_pickle=True)
    assert marker.exists()


def test_pickled_module_needs_trust(tmp_path: Path) -> None:
    net = _mlp()
    path = tmp_path / "full.pt"
    torch.save(net, path)
    with pytest.raises(LoadError, match="pickled Python objects"):
        load_model(path)
    m = load_model(path, trust_pickle=True)
    assert "pickled torch module" in m.source
    x = _inputs(3, 6)
    np.testing.assert_allclose(m.network.forward(x), _torch_out(net.double(), x, (6,)), atol=1e-6)


def test_missing_and_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"model file .*nope.pth does not exist"):
        load_model(tmp_path / "nope.pth")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(LoadError, match=r"notes.txt is not a model file"):
        load_model(text)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(LoadError, match=r"junk.pth is not a model file"):
        load_model(junk)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(LoadError, match=r"tensor.pt is not a model file"):
        load_model(tensor)
    with pytest.raises(LoadError, match="is not a model file"):
        load_model(tmp_path)


def test_loaded_network_is_network() -> None:
    m = from_module(_mlp(), (6,))
    assert isinstance(m.network, Network)
    assert m.network.layers[0].weight.dtype == np.float64


def test_load_check_catches_small_mismatch() -> None:
    from verify.load.base import finish
    from verify.network import Affine, ReLU

    rng = np.random.default_rng(9)
    ops = [Affine(rng.normal(size=(4, 3)), rng.normal(size=4), "a"), ReLU(), Affine(rng.normal(size=(2, 4)), np.zeros(2), "b")]

    def exact(x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ ops[0].weight.T + ops[0].bias, 0) @ ops[2].weight.T

    def off(x: np.ndarray) -> np.ndarray:
        return exact(x) + 1e-6

    kw = dict(domain=(0.0, 1.0), source="t", what="toy", name="toy")
    assert finish(ops, (3,), exact, float32=False, **kw).max_abs_diff < 1e-12
    with pytest.raises(LoadError, match="toy: the converted network does not match the source model"):
        finish(ops, (3,), off, float32=False, **kw)
    assert finish(ops, (3,), off, float32=True, **kw).max_abs_diff == pytest.approx(1e-6)  # float32 accuracy
    with pytest.raises(LoadError, match="does not match"):  # ... but a float64 copy of the source is held to 1e-8
        finish(ops, (3,), exact, float32=True, strict=off, **kw)


def test_final_relu_kept_exact() -> None:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU()).double()
    m = from_module(net, (3,))
    x = _inputs(30, 3) * 4 - 2
    out = m.network.forward(x)
    np.testing.assert_allclose(out, _torch_out(net, x, (3,)), atol=1e-12)
    assert np.all(out >= 0) and any("ReLU on the outputs" in n for n in m.network.notes)


class Untraceable(nn.Module):
    """Control flow on the input blocks fx; the children are registered in forward order (or not)."""

    def __init__(self, swap: bool = False) -> None:
        super().__init__()
        torch.manual_seed(6)
        if swap:  # registration order differs from the order forward uses
            self.fc2, self.relu, self.fc1 = nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5)
        else:
            self.fc1, self.relu, self.fc2 = nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            x = self.fc1(x)
        return self.fc2(self.relu(x))


def test_untraceable_module_uses_checked_child_order() -> None:
    net = Untraceable().double()
    m = from_module(net, (5,))
    assert "module order" in m.source
    x = _inputs(6, 5)
    np.testing.assert_allclose(m.network.forward(x), _torch_out(net, x, (5,)), atol=1e-12)
    with pytest.raises(LoadError, match="does not match the source model"):
        from_module(Untraceable(swap=True).double(), (5,))


def test_unbounded_and_per_input_domains() -> None:
    net = _mlp().double()
    m = from_module(net, (6,), domain=(-np.inf, np.inf))
    assert np.all(np.isinf(m.network.domain_lower)) and m.max_abs_diff < 1e-9
    lo, hi = np.linspace(-1, 0, 6), np.linspace(1, 2, 6)
    m = from_module(net, (6,), domain=(lo, hi))
    np.testing.assert_array_equal(m.network.domain_lower, lo)
    np.testing.assert_array_equal(m.network.domain_upper, hi)
