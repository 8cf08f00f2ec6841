"""ONNX loader: torch.onnx.export round trip, hand-built graphs covering every supported op, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from test_load_torch import conv_net
from verify.load import LoadError, load_model


def _save(tmp_path: Path, nodes: list, inits: dict, in_shape: list, out_shape: list, name: str = "g.onnx") -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _close_to_runtime(m, x: np.ndarray) -> None:
    ref = m.reference(x)
    assert np.max(np.abs(m.network.forward(x) - ref)) <= 1e-5 * max(1.0, np.max(np.abs(ref)))


def test_torch_export_round_trip(tmp_path: Path) -> None:
    net = conv_net(torch.float32)
    path = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net, (torch.zeros(1, 2, 10, 9),), str(path), dynamo=False, input_names=["x"],
                dynamic_axes={"x": {0: "N"}}, do_constant_folding=False,
            )
        except Exception as exc:  # noqa: BLE001 - exporter needs optional packages in some torch builds
            pytest.skip(f"torch.onnx.export unavailable here: {exc}")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "BatchNormalization", "Gemm", "Relu"} <= ops
    m = load_model(path)
    assert m.network.input_shape == (2, 10, 9)
    x = np.random.default_rng(0).uniform(size=(12, 180))
    _close_to_runtime(m, x)
    with torch.no_grad():  # the same float32 weights evaluated by torch in float64
        exact = net.double()(torch.tensor(x).reshape(12, 2, 10, 9)).numpy()
    np.testing.assert_allclose(m.network.forward(x), exact, atol=1e-9)


def test_handbuilt_mlp_ops(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(3, 5)), rng.normal(size=5)  # MatMul weight is (in, out)
    w2, c2 = rng.normal(size=(5, 4)), rng.normal(size=(1, 4))  # Gemm with transB=0, alpha, beta
    mean, std, gain = np.array([0.2, 0.4, 0.6]), np.array([0.5, 0.25, 2.0]), rng.uniform(0.5, 2, size=5)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1], name="swap_unit_axes"),  # [1,3,1] -> [1,1,3]
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([1, 3], dtype=np.int64)), name="c"),
        helper.make_node("Reshape", ["t", "shape"], ["r"], name="reshape"),
        helper.make_node("Sub", ["r", "mean"], ["s"], name="sub"),
        helper.make_node("Div", ["s", "std"], ["d"], name="div"),
        helper.make_node("MatMul", ["d", "w1"], ["mm"], name="matmul"),
        helper.make_node("Add", ["b1", "mm"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["h"], name="relu"),
        helper.make_node("Mul", ["h", "gain"], ["g"], name="mul"),
        helper.make_node("Identity", ["g"], ["i"], name="id"),
        helper.make_node("Gemm", ["i", "w2", "c2"], ["y"], alpha=0.5, beta=2.0, name="gemm"),
    ]
    inits = {"mean": mean, "std": std, "w1": w1, "b1": b1, "gain": gain, "w2": w2, "c2": c2}
    m = load_model(_save(tmp_path, nodes, inits, [1, 3, 1], [1, 4]))
    assert m.network.input_shape == (3, 1)
    x = rng.uniform(size=(7, 3))
    _close_to_runtime(m, x)  # onnxruntime, one row at a time (batch fixed at 1)
    f = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731 - the stored float32 values
    h = np.maximum((x - f(mean)) / f(std) @ f(w1) + f(b1), 0) * f(gain)
    np.testing.assert_allclose(m.network.forward(x), 0.5 * h @ f(w2) + 2.0 * f(c2), atol=1e-9)


def test_handbuilt_conv_bn_shape_chain(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    wc, bc = rng.normal(size=(4, 1, 3, 2)), rng.normal(size=4)  # group=2 on 2 input channels
    bn = [rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)]
    out_hw = (6 + 1 + 0 - 3) // 2 + 1, (5 + 0 + 2 - 2) // 1 + 1  # pads: top 1, left 0, bottom 0, right 2
    flat = 4 * out_hw[0] * out_hw[1]
    wf = rng.normal(size=(3, flat))
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], strides=[2, 1], pads=[1, 0, 0, 2], group=2, name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], epsilon=1e-3, name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["sh"], name="shape"),
        helper.make_node("Gather", ["sh", "zero"], ["n0"], axis=0, name="gather"),
        helper.make_node("Unsqueeze", ["n0", "ax"], ["n0u"], name="unsq"),
        helper.make_node("Concat", ["n0u", "minus1"], ["target"], axis=0, name="concat"),
        helper.make_node("Reshape", ["r", "target"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1, name="fc"),
    ]
    inits = {"wc": wc, "bc": bc, "g": bn[0], "b": bn[1], "m": bn[2], "v": bn[3], "wf": wf}
    path = _save(tmp_path, nodes, inits, ["N", 2, 6, 5], ["N", 3])
    model = onnx.load(str(path))
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "ax"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1"),
    ])
    onnx.save(model, str(path))
    m = load_model(path)
    assert m.network.describe() == f"60-{flat}-3"
    _close_to_runtime(m, np.random.default_rng(3).uniform(size=(9, 60)))


def test_unsupported_op_names_op_node_and_index(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], transB=1, name="fc1"),
        helper.make_node("Sigmoid", ["a"], ["s"], name="act"),
        helper.make_node("Gemm", ["s", "w2"], ["y"], transB=1, name="fc2"),
    ]
    path = _save(tmp_path, nodes, {"w": np.ones((4, 3)), "w2": np.ones((2, 4))}, [1, 3], [1, 2])
    with pytest.raises(LoadError, match=r"unsupported ONNX op Sigmoid at node 'act' \(index 1\)"):
        load_model(path)


def test_residual_add_rejected(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], transB=1, name="fc1"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "x"], ["s"], name="skip"),
        helper.make_node("Gemm", ["s", "w"], ["y"], transB=1, name="fc2"),
    ]
    path = _save(tmp_path, nodes, {"w": np.eye(3)}, [1, 3], [1, 3])
    with pytest.raises(LoadError, match=r"Add node 'skip' \(index 2\) combines the activation with an earlier intermediate"):
        load_model(path)


def test_nan_weights_and_shape_mismatch(tmp_path: Path) -> None:
    w = np.ones((4, 3))
    w[1, 2] = np.nan
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], transB=1, name="fc1"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1, name="fc2"),
    ]
    path = _save(tmp_path, nodes, {"w": w, "w2": np.ones((2, 4))}, [1, 3], [1, 2])
    with pytest.raises(LoadError, match=r"fc1 \(position 0\) has NaN or Inf weights"):
        load_model(path)
    bad = [
        helper.make_node("Gemm", ["x", "w"], ["a"], transB=1, name="fc1"),
        helper.make_node("Gemm", ["a", "w2"], ["y"], transB=1, name="fc2"),
    ]
    path = _save(tmp_path, bad, {"w": np.ones((4, 3)), "w2": np.ones((2, 5))}, [1, 3], [1, 2], "bad.onnx")
    with pytest.raises(LoadError, match=r"Gemm node 'fc2' \(index 1\).*shape mismatch at layer fc2: expects 5 input features"):
        load_model(path)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    p = tmp_path / "x.onnx"
    p.write_bytes(b"\x07\x07 definitely not protobuf \xff\xff")
    with pytest.raises(LoadError, match="is not a model file"):
        load_model(p)
