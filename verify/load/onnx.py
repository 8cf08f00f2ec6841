"""ONNX graphs -> constraint form; the reference is onnxruntime.

The graph must be a chain: exactly one tensor depends on the input at any time. Supported ops on
that tensor: Gemm, MatMul, Add, Sub, Mul, Div (by constants), Relu, Flatten, Reshape, Squeeze,
Unsqueeze, Transpose, Conv (2-D), BatchNormalization (inference), Identity, Dropout (inference).
Nodes whose inputs are all constants (Constant, Shape of the activation, Gather, Concat, Cast, ...)
are folded with onnx's reference evaluator. Anything else is a :class:`LoadError` naming the op,
the node and its index.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnx.numpy_helper
import scipy.sparse as sp

from verify.load import layers
from verify.load.base import LoadedModel, LoadError, finish
from verify.messages import one_line
from verify.network import Affine, ReLU

log = logging.getLogger(__name__)

_SHAPE_ONLY = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose"}
_NO_STRICT = {"BatchNormalization", "Dropout"}
SUPPORTED = ("Gemm, MatMul, Add, Sub, Mul, Div (by constants), Relu, Flatten, Reshape, Squeeze, Unsqueeze, "
             "Transpose, Conv, BatchNormalization, Constant, Identity")


class _Var:
    """Marker for the input-dependent tensor."""


VAR = _Var()


def load_onnx(path: Path, *, domain: tuple, input_shape: Sequence[int] | None, mean: object = None, std: object = None) -> LoadedModel:
    """Load an ONNX model file; ``input_shape`` (no batch dim) is needed only when the file leaves it symbolic."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise LoadError(f"{path} is not a model file (not a readable ONNX protobuf: {one_line(exc, 100)})") from exc
    graph = model.graph
    consts: dict[str, Any] = {t.name: _initializer(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise LoadError(f"{path}: the ONNX graph must have one input and one output (has {len(inputs)} and {len(graph.output)})")
    inp = inputs[0]
    full, batched, fixed_batch = _input_shape(inp, input_shape, path)
    sample_shape = full[1:] if batched else full
    ops, _ = convert_nodes(graph, consts, inp.name, full, str(path))
    notes: list[str] = []
    ops, pre = layers.fold_normalization(ops, mean, std, sample_shape, notes)
    elem = inp.type.tensor_type.elem_type
    dtype = np.float64 if elem == onnx.TensorProto.DOUBLE else np.float32
    ref = _ort_reference(path, inp.name, sample_shape, batched, fixed_batch, dtype, pre)
    return finish(
        ops, sample_shape, ref, domain=domain, source="ONNX model (onnxruntime reference)", what=str(path),
        name=path.stem, float32=dtype == np.float32 or any(t.data_type == 1 for t in graph.initializer), notes=notes,
        strict=float64_reference(model, inp.name, sample_shape, batched, pre),
    )


def float64_reference(model: Any, name: str, shape: tuple, batched: bool, pre: Affine | None):
    """onnx's own numpy reference evaluator on a float64 copy of the model, or None where it cannot run it.

    An independent float64 evaluation of the same graph, so the load check is not limited to
    float32 accuracy (onnxruntime lacks float64 kernels for some ops, e.g. Conv). Graphs with
    BatchNormalization or Dropout are left to onnxruntime alone: onnx's reference BatchNormalization
    (opsets 9-13) uses batch statistics whenever the momentum attribute has its default.
    """
    from onnx.reference import ReferenceEvaluator

    if any(node.op_type in _NO_STRICT for node in model.graph.node):
        return None

    m64 = onnx.ModelProto()
    m64.CopyFrom(model)
    for t in m64.graph.initializer:
        a = onnx.numpy_helper.to_array(t)
        if np.issubdtype(a.dtype, np.floating):
            t.CopyFrom(onnx.numpy_helper.from_array(a.astype(np.float64), t.name))
    for node in m64.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type in (1, 10):
                attr.t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(attr.t).astype(np.float64)))
    try:
        ev = ReferenceEvaluator(m64)
    except Exception as exc:  # noqa: BLE001
        log.info("no float64 reference evaluation of the ONNX model: %s", exc)
        return None

    def reference(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if pre is not None:
            x = pre.apply(x)
        rows = [ev.run(None, {name: r.reshape((1, *shape) if batched else shape)})[0] for r in x]
        return np.stack([np.asarray(r, dtype=np.float64).reshape(-1) for r in rows])

    try:
        probe = ev.run(None, {name: np.zeros((1, *shape) if batched else shape)})[0]
    except Exception as exc:  # noqa: BLE001 - unsupported dtype mixes in the reference evaluator
        log.info("no float64 reference evaluation of the ONNX model: %s", exc)
        return None
    return reference if np.asarray(probe).dtype == np.float64 else None


def _initializer(t: Any) -> np.ndarray:
    """An initializer as numpy; floating types in float64."""
    a = onnx.numpy_helper.to_array(t)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a


def _input_shape(inp: Any, given: Sequence[int] | None, path: Path) -> tuple[tuple[int, ...], bool, bool]:
    """``(full shape with batch 1, has batch dim, batch fixed at 1)`` of the graph input."""
    dims = inp.type.tensor_type.shape.dim
    raw = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if given is not None:
        given = tuple(int(s) for s in given)
        batched = len(raw) == len(given) + 1
        if not batched and len(raw) != len(given):
            raise LoadError(f"{path}: input_shape {given} does not fit the model input of rank {len(raw)}")
        return ((1, *given) if batched else given), batched, batched and raw[0] == 1
    if len(raw) < 2 or any(d is None for d in raw[1:]):
        if len(raw) == 1 and raw[0]:
            return (int(raw[0]),), False, False
        raise LoadError(f"{path}: the model input {inp.name} has shape {raw} with unknown sizes; pass input_shape (e.g. 1,28,28)")
    return (1, *(int(d) for d in raw[1:])), True, raw[0] == 1


def _ort_reference(path: Path, name: str, shape: tuple, batched: bool, fixed: bool, dtype: Any, pre: Affine | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{path}: onnxruntime cannot load the model: {one_line(exc, 150)}") from exc

    def reference(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if pre is not None:
            x = pre.apply(x)
        x = x.astype(dtype)
        if not batched:
            return np.stack([np.asarray(sess.run(None, {name: r.reshape(shape)})[0]).reshape(-1) for r in x]).astype(np.float64)
        if fixed:
            rows = [np.asarray(sess.run(None, {name: r.reshape(1, *shape)})[0]).reshape(-1) for r in x]
            return np.stack(rows).astype(np.float64)
        try:
            out = sess.run(None, {name: x.reshape(len(x), *shape)})[0]
        except Exception:  # noqa: BLE001 - e.g. a Reshape with a hard-coded batch size of 1
            out = np.stack([np.asarray(sess.run(None, {name: r.reshape(1, *shape)})[0]).reshape(-1) for r in x])
        return np.asarray(out, dtype=np.float64).reshape(len(x), -1)

    return reference


def _attrs(node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def convert_nodes(graph: Any, consts: dict[str, Any], input_name: str, full: tuple[int, ...], what: str) -> tuple[list, tuple[int, ...]]:
    """Walk the nodes in order; returns the ops and the output shape (with batch dim)."""
    env: dict[str, Any] = dict(consts)
    env[input_name] = VAR
    head, shape, ops = input_name, tuple(full), []
    for idx, node in enumerate(graph.node):
        where = f"node '{node.name or node.output[0]}' (index {idx})"
        ins = [env.get(n) if n else None for n in node.input]
        missing = [n for n, v in zip(node.input, ins) if n and n not in env]
        if missing:
            raise LoadError(f"{what}: {node.op_type} {where} reads {missing[0]}, which no earlier node produces")
        if not any(v is VAR for v in ins):
            env.update(zip(node.output, _fold(node, ins, what, where)))
            continue
        if node.op_type == "Shape":
            env[node.output[0]] = np.array(shape, dtype=np.int64)
            continue
        if [n for n, v in zip(node.input, ins) if v is VAR] != [head]:
            raise LoadError(
                f"{what}: {node.op_type} {where} combines the activation with an earlier intermediate result "
                "(branches / residual connections are not supported)"
            )
        new_ops, shape = _convert(node, ins, shape, where, what)
        ops += new_ops
        head = node.output[0]
        env[head] = VAR
    if graph.output[0].name != head:
        raise LoadError(f"{what}: the graph output {graph.output[0].name} is not the end of the input's chain")
    return ops, shape


def _fold(node: Any, ins: list, what: str, where: str) -> list:
    if node.op_type == "Constant":
        a = _attrs(node)
        if "value" in a:
            return [onnx.numpy_helper.to_array(a["value"])]
        for k in ("value_float", "value_int", "value_floats", "value_ints"):
            if k in a:
                return [np.array(a[k])]
    try:
        from onnx.reference import ReferenceEvaluator

        feeds = {n: v for n, v in zip(node.input, ins) if n}
        return list(ReferenceEvaluator(node).run(None, feeds))
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{what}: cannot evaluate constant op {node.op_type} {where}: {exc}") from exc


def _convert(node: Any, ins: list, shape: tuple[int, ...], where: str, what: str) -> tuple[list, tuple[int, ...]]:
    op, a, name = node.op_type, _attrs(node), node.name or node.output[0]
    try:
        if op == "Relu":
            return [ReLU(name)], shape
        if op in _SHAPE_ONLY:
            return _shape_op(op, a, ins, shape, name)
        if op == "Gemm":
            return _gemm(a, ins, shape, name)
        if op == "MatMul":
            return _matmul(ins, shape, name)
        if op in ("Add", "Sub", "Mul", "Div"):
            return [_binary(op, ins, shape, name)], shape
        if op == "Conv":
            return _conv(a, ins, shape, name)
        if op == "BatchNormalization":
            if a.get("training_mode", 0):
                raise LoadError(f"BatchNormalization {where} is in training mode")
            aff = layers.batchnorm(ins[3], ins[4], ins[1], ins[2], float(a.get("epsilon", 1e-5)), shape[1:], name)
            return [aff], shape
    except LoadError as exc:
        raise LoadError(f"{what}: {op} {where}: {exc}") from exc
    raise LoadError(f"{what}: unsupported ONNX op {op} at {where}; supported: {SUPPORTED}")


def _shape_op(op: str, a: dict, ins: list, shape: tuple[int, ...], name: str) -> tuple[list, tuple[int, ...]]:
    if op in ("Identity", "Dropout"):
        return [], shape
    if op == "Flatten":
        axis = int(a.get("axis", 1)) % (len(shape) + 1) if shape else 0
        return [], (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
    if op == "Reshape":
        target = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
        if not a.get("allowzero", 0):
            target = [shape[i] if v == 0 else v for i, v in enumerate(target)]
        try:
            return [], tuple(np.empty(int(np.prod(shape))).reshape(target).shape)
        except ValueError as exc:
            raise LoadError(f"cannot reshape {shape} to {target}") from exc
    if op in ("Squeeze", "Unsqueeze"):
        axes = a.get("axes", None)
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = np.asarray(ins[1]).reshape(-1).tolist()
        if op == "Squeeze":
            axes = [i for i, s in enumerate(shape) if s == 1] if axes is None else [x % len(shape) for x in axes]
            return [], tuple(s for i, s in enumerate(shape) if i not in axes)
        out = list(shape)
        rank = len(shape) + len(axes)
        for ax in sorted(x % rank for x in axes):
            out.insert(ax, 1)
        return [], tuple(out)
    perm = list(a.get("perm", range(len(shape) - 1, -1, -1)))
    if layers.is_trivial_permutation(shape, perm):
        return [], tuple(shape[p] for p in perm)
    aff, new = layers.permutation(shape, perm, name)
    return [aff], new


def _gemm(a: dict, ins: list, shape: tuple[int, ...], name: str) -> tuple[list, tuple[int, ...]]:
    if ins[0] is not VAR or ins[1] is VAR or a.get("transA", 0) or len(shape) != 2:
        raise LoadError("only Gemm(activation, constant) with transA=0 on a 2-D activation is supported")
    b = np.asarray(ins[1], dtype=np.float64)
    w = (b if a.get("transB", 0) else b.T) * float(a.get("alpha", 1.0))  # (out, in)
    c = ins[2] if len(ins) > 2 and ins[2] is not None else None
    cvec = None if c is None else float(a.get("beta", 1.0)) * np.asarray(c, dtype=np.float64)
    if cvec is not None and cvec.size == w.shape[0]:
        aff, out = layers.dense(w, cvec.reshape(-1), shape, name)
        return [aff], out
    aff, out = layers.dense(w, None, shape, name)
    return ([aff] if cvec is None else [aff, _binary("Add", [VAR, cvec], out, name + ":bias")]), out


def _matmul(ins: list, shape: tuple[int, ...], name: str) -> tuple[list, tuple[int, ...]]:
    if ins[0] is VAR:
        w = np.asarray(ins[1], dtype=np.float64)
        if w.ndim != 2:
            raise LoadError(f"MatMul with a constant of shape {w.shape} is not supported (2-D only)")
        aff, out = layers.dense(w.T, None, shape, name)
        return [aff], out
    w = np.asarray(ins[0], dtype=np.float64)
    if w.ndim != 2 or len(shape) < 2 or shape[-2] != w.shape[1]:
        raise LoadError(f"MatMul of a constant {w.shape} with an activation of shape {shape} is not supported")
    lead, k = int(np.prod(shape[:-2])), shape[-1]
    mat = sp.kron(sp.identity(lead), sp.kron(sp.csr_matrix(w), sp.identity(k)), format="csr")
    return [Affine(mat, np.zeros(mat.shape[0]), name)], (*shape[:-2], w.shape[0], k)


def _binary(op: str, ins: list, shape: tuple[int, ...], name: str) -> Affine:
    var_first = ins[0] is VAR
    c = np.asarray(ins[1] if var_first else ins[0], dtype=np.float64)
    if np.broadcast_shapes(c.shape, shape) != tuple(shape):
        raise LoadError(f"constant of shape {c.shape} would broadcast the activation beyond shape {shape}")
    return layers.constant_arith(op.lower(), c, var_first, shape, name, f"node {name}")


def _conv(a: dict, ins: list, shape: tuple[int, ...], name: str) -> tuple[list, tuple[int, ...]]:
    w = np.asarray(ins[1], dtype=np.float64)
    if w.ndim != 4 or len(shape) != 4 or shape[0] != 1:
        raise LoadError(f"only 2-D convolutions are supported (weight {w.shape}, input {shape})")
    stride = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pt, pl, pb, pr = a.get("pads", (0, 0, 0, 0))
    elif auto == "VALID":
        pt = pl = pb = pr = 0
    else:
        pads = []
        for size, k, s, d in zip(shape[2:], w.shape[2:], stride, dil):
            total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads.append((lo, total - lo))
        (pt, pb), (pl, pr) = pads
    bias = ins[2] if len(ins) > 2 and ins[2] is not None else None
    aff, out = layers.conv2d(w, bias, shape[1:], stride, (pt, pl, pb, pr), dil, int(a.get("group", 1)), name)
    return [aff], (1, *out)
