"""TorchScript archives (``torch.jit.save`` of scripted or traced modules) -> constraint form.

The scripted module's leaf submodules are read in registration order by their original class
name; layer hyper-parameters missing on traced modules (stride, padding, eps, flatten dims) are
read from the submodule's graph constants. The load-time check against the TorchScript module
itself catches a forward that does not follow the submodule order (e.g. a functional ReLU).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import torch

from verify.load.base import LoadedModel, LoadError, checked_shape, finish
from verify.messages import one_line
from verify.load import layers
from verify.load.module import convert_children, float64_reference, module_dtype, module_reference

_GRAPH_KINDS = {
    "Conv2d": ("aten::_convolution", {"stride": 3, "padding": 4, "dilation": 5, "groups": 8}),
    "BatchNorm1d": ("aten::batch_norm", {"eps": 7}),
    "BatchNorm2d": ("aten::batch_norm", {"eps": 7}),
    "Flatten": ("aten::flatten", {"start_dim": 1, "end_dim": 2}),
}
_ATTRS = ("weight", "bias", "running_mean", "running_var", "mean", "std")


def kind_of(m: Any) -> str:
    """The original class name of a script module (``'Linear'``, ``'Conv2d'``, ...)."""
    return str(getattr(m, "original_name", type(m).__name__))


def load_torchscript(
    path: Path,
    input_shape: Sequence[int] | None,
    *,
    domain: tuple,
    mean: object = None,
    std: object = None,
    meta: dict | None = None,
) -> LoadedModel:
    """Load a TorchScript archive; ``input_shape`` is required unless the first layer is Linear."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated but still the reader
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{path}: cannot read the TorchScript archive: {one_line(exc)}") from exc
    module.eval()
    leaves = [_view(m) for m in _leaf_list(module)]
    if input_shape is None:
        first = next((m for m in leaves if kind_of(m) in ("Linear", "Conv2d")), None)
        if first is None or kind_of(first) != "Linear":
            raise LoadError(f"{path}: cannot infer the input shape of this TorchScript model; pass input_shape (e.g. 1,28,28)")
        input_shape = (int(first.weight.shape[1]),)
    input_shape = checked_shape(input_shape, str(path))
    notes: list[str] = []
    ops = convert_children(_Wrapped(leaves), input_shape, kind_of, notes)
    ops, pre = layers.fold_normalization(ops, mean, std, input_shape, notes)
    dtype = module_dtype(module)
    ref = module_reference(module, input_shape, dtype, pre)
    return finish(
        ops, input_shape, ref, domain=domain, source="TorchScript archive (submodule order)", what=str(path),
        name=path.stem, float32=dtype != torch.float64, notes=notes, meta=meta,
        strict=float64_reference(module, input_shape, pre),
    )


class _Wrapped:
    """A stand-in exposing a flat list of leaves through ``named_children``."""

    def __init__(self, leaves: list) -> None:
        self._leaves = leaves

    def named_children(self) -> list[tuple[str, Any]]:
        return [(m.qualname, m) for m in self._leaves]


def _leaf_list(module: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if list(child.named_children()) and kind_of(child) not in _GRAPH_KINDS and kind_of(child) != "Linear":
            out += _leaf_list(child, full + ".")
        else:
            out.append((full, child))
    return out


def _view(item: tuple[str, Any]) -> SimpleNamespace:
    """A plain object with the layer attributes the converters read (graph constants where missing)."""
    name, m = item
    kind = kind_of(m)
    ns = SimpleNamespace(original_name=kind, qualname=name, named_children=lambda: [])
    for a in _ATTRS:
        try:
            v = getattr(m, a)
        except (AttributeError, RuntimeError):
            continue
        if v is None or isinstance(v, (torch.Tensor, float, int, list, tuple)):
            setattr(ns, a, v)
    for a in ("stride", "padding", "dilation", "groups", "eps", "start_dim", "end_dim", "padding_mode", "dim", "unflattened_size"):
        try:
            setattr(ns, a, getattr(m, a))
        except (AttributeError, RuntimeError):
            pass
    if kind in _GRAPH_KINDS:
        _fill_from_graph(ns, m, kind)
    return ns


def _fill_from_graph(ns: SimpleNamespace, m: Any, kind: str) -> None:
    op, positions = _GRAPH_KINDS[kind]
    missing = [a for a in positions if not hasattr(ns, a)]
    if not missing:
        return
    node = next((n for n in m.graph.nodes() if n.kind() in (op, "aten::conv2d")), None)
    if node is None:
        raise LoadError(f"layer {ns.qualname} ({kind}): cannot read its settings from the TorchScript graph")
    inputs = list(node.inputs())
    for a in missing:
        setattr(ns, a, _constant(inputs[positions[a] if node.kind() == op else _CONV2D_POS[a]], ns.qualname))


_CONV2D_POS = {"stride": 3, "padding": 4, "dilation": 5, "groups": 6}


def _constant(value: Any, name: str) -> Any:
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::ListConstruct":
        return [_constant(i, name) for i in node.inputs()]
    raise LoadError(f"layer {name}: a setting in the TorchScript graph is not a constant ({node.kind()})")
