"""In-memory ``torch.nn.Module`` -> constraint form.

The module is traced with ``torch.fx`` (leaf modules: the torch.nn layers and ERAN / CROWN style
``Normalize`` layers); each graph node becomes affine/ReLU ops while the tensor shape is tracked.
Modules that fx cannot trace are read in registration order of their children instead; the
load-time check against the module itself then decides whether that order was right.
"""

from __future__ import annotations

import copy
import logging
import operator
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from verify.load import layers
from verify.load.base import LoadedModel, LoadError, Reference, checked_shape, finish
from verify.messages import one_line
from verify.load.leaves import SUPPORTED, Shape, convert_leaf, flatten_shape, normalize_like
from verify.network import Affine, ReLU

log = logging.getLogger(__name__)

_RELU = {F.relu, torch.relu, torch.relu_, "relu", "relu_"}
_ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
_SUB = {operator.sub, operator.isub, torch.sub, "sub", "sub_"}
_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_", "true_divide"}
_NOOP = {"contiguous", "clone", torch.clone}
_VIEW = {"view", "reshape", torch.reshape}
_FLATTEN = {torch.flatten, "flatten"}


class _Var:
    """The single live (input-dependent) tensor of the chain."""


VAR = _Var()


class _Const:
    """A shape-derived constant (``x.size()``, ``x.shape``) produced by a node that reads the activation."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        if type(m).__name__ in SUPPORTED or (normalize_like(m) is not None and not list(m.children())):
            return True
        return super().is_leaf_module(m, qualname)


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype of the module's first parameter or buffer (float32 if it has none)."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def module_reference(module: Callable, input_shape: Shape, dtype: torch.dtype, pre: Affine | None) -> Reference:
    """Run ``module`` on ``(N, in_dim)`` float64 inputs (after the optional input map ``pre``)."""
    device = next((t.device for t in [*module.parameters(), *module.buffers()]), torch.device("cpu"))

    def reference(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if pre is not None:
            x = pre.apply(x)
        with torch.no_grad():
            out = module(torch.as_tensor(x.reshape(len(x), *input_shape), dtype=dtype, device=device))
        return out.detach().double().cpu().numpy().reshape(len(x), -1)

    return reference


def from_module(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    domain: tuple = (0.0, 1.0),
    mean: object = None,
    std: object = None,
    source: str = "torch module",
    what: str = "torch module",
    meta: dict | None = None,
    notes: Sequence[str] = (),
) -> LoadedModel:
    """Convert an ``nn.Module`` (a copy in eval mode) for inputs of ``input_shape`` (no batch dim).

    ``mean``/``std`` (scalars, per-channel or full arrays) normalize the input *before* the module,
    ``(x - mean) / std``; they are folded into the first affine layer so eps stays in user units.
    Raises :class:`LoadError` for unsupported layers or when the result does not match the module.
    """
    input_shape = checked_shape(input_shape, what)
    try:
        module = copy.deepcopy(module)
    except Exception:  # noqa: BLE001 - some modules cannot be copied; eval() below is then in place
        log.warning("could not copy %s; switching it to eval mode in place", what)
    module.eval()
    notes = list(notes)
    try:
        graph = fx.GraphModule(module, _Tracer().trace(module))
    except Exception as exc:  # noqa: BLE001 - fx raises many types for untraceable code
        log.info("fx tracing of %s failed (%s); using the order of its children", what, exc)
        ops = convert_children(module, input_shape, lambda m: type(m).__name__, notes)
        notes.append(f"read in the order of its submodules (fx tracing failed: {one_line(exc, 80)})")
        source += " (module order)"
    else:
        ops = convert_graph(graph, input_shape)
    ops, pre = layers.fold_normalization(ops, mean, std, input_shape, notes)
    dtype = module_dtype(module)
    ref = module_reference(module, input_shape, dtype, pre)
    return finish(
        ops, input_shape, ref, domain=domain, source=source, what=what, name=type(module).__name__,
        float32=dtype != torch.float64, notes=notes, meta=meta, strict=float64_reference(module, input_shape, pre),
    )


def float64_reference(module: Any, input_shape: Shape, pre: Affine | None) -> Reference | None:
    """The reference of a float64 copy of a lower-precision module (None if it is float64 or cannot be copied)."""
    if module_dtype(module) == torch.float64:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # script modules warn about .grad access while copying
            copy64 = copy.deepcopy(module).double().eval()
    except Exception as exc:  # noqa: BLE001 - e.g. modules holding non-copyable state
        log.info("no float64 copy of the module for the strict load check: %s", exc)
        return None
    return module_reference(copy64, input_shape, torch.float64, pre)


# --- fx graphs ---------------------------------------------------------------------------------
def convert_graph(gm: fx.GraphModule, input_shape: Shape) -> list:
    """Ops of a traced chain network; raises :class:`LoadError` at the first unsupported node."""
    env: dict[fx.Node, Any] = {}
    ops: list = []
    shape: Shape = input_shape
    head: fx.Node | None = None
    pos = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if head is not None:
                raise LoadError(f"the module takes several inputs ({node.name}); only single-input networks are supported")
            env[node], head = VAR, node
        elif node.op == "get_attr":
            env[node] = _fetch_attr(gm, str(node.target))
        elif node.op == "output":
            if env.get(node.args[0]) is not VAR or node.args[0] is not head:
                raise LoadError("the module's output is not a single tensor computed from its input")
        else:
            where = f"position {pos} ({node.target if node.op == 'call_module' else node.name})"
            pos += 1
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            uses_var = any(env.get(n) is VAR for n in node.all_input_nodes)
            if not uses_var:
                env[node] = _evaluate(gm, node, args, kwargs, where)
                continue
            if [n for n in node.all_input_nodes if env.get(n) is VAR] != [head]:
                raise LoadError(
                    f"operation at {where} uses an earlier intermediate result "
                    "(branches / residual connections are not supported)"
                )
            out = _convert_node(gm, node, args, kwargs, shape, where)
            if isinstance(out, _Const):
                env[node] = out.value
            else:
                new_ops, shape = out
                ops += new_ops
                env[node], head = VAR, node
    return ops


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _evaluate(gm: fx.GraphModule, node: fx.Node, args: Any, kwargs: Any, where: str) -> Any:
    """Constant folding of a node whose inputs are all constants."""
    try:
        if node.op == "call_module":
            return gm.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return node.target(*args, **kwargs)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"could not evaluate the constant expression at {where}: {exc}") from exc


def _convert_node(gm: fx.GraphModule, node: fx.Node, args: Any, kwargs: Any, shape: Shape, where: str) -> Any:
    name = str(node.target) if node.op == "call_module" else node.name
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        norm = normalize_like(m) if not list(m.children()) else None
        if norm is not None and type(m).__name__ not in SUPPORTED:
            return [layers.input_normalization(norm[0], norm[1], shape, name)], shape
        return convert_leaf(type(m).__name__, m, shape, name, where)
    fn = node.target
    batched = (1, *shape)
    if fn in _RELU:
        return [ReLU(name)], shape
    if fn in _NOOP or (fn in ("float", "double", "to") and len(args) <= 2):
        return [], shape
    if fn is F.dropout and not _arg(args, kwargs, 2, "training", True):
        return [], shape  # F.dropout(x, p, training=self.training) in eval mode
    if fn in _FLATTEN:
        return [], flatten_shape(shape, int(_arg(args, kwargs, 1, "start_dim", 0)), int(_arg(args, kwargs, 2, "end_dim", -1)))
    if fn in _VIEW:
        return [], _reshape(shape, args[1:], where)
    if fn == "size":
        return _Const(torch.Size(batched) if len(args) < 2 else batched[int(args[1])])
    if fn is getattr and args[1] == "shape":
        return _Const(torch.Size(batched))
    if fn is F.linear:
        aff, out = layers.dense(args[1], _arg(args, kwargs, 2, "bias", None), shape, name)
        return [aff], out
    for group, kind in ((_ADD, "add"), (_SUB, "sub"), (_MUL, "mul"), (_DIV, "div")):
        if fn in group:
            return [_elementwise(kind, args, kwargs, shape, name, where)], shape
    raise LoadError(f"unsupported operation {getattr(fn, '__name__', fn)} at {where}")


def _arg(args: Any, kwargs: Any, i: int, key: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(key, default)


def _reshape(shape: Shape, target: Any, where: str) -> Shape:
    dims = list(target[0]) if len(target) == 1 and isinstance(target[0], (tuple, list, torch.Size)) else list(target)
    n = int(np.prod(shape))
    try:
        new = np.empty(n).reshape([int(d) for d in dims]).shape
    except (ValueError, TypeError) as exc:
        raise LoadError(f"reshape at {where}: cannot view a tensor of shape {(1, *shape)} as {tuple(dims)}") from exc
    return tuple(new[1:]) if len(new) > 1 and new[0] == 1 else tuple(new)


def _elementwise(kind: str, args: Any, kwargs: Any, shape: Shape, name: str, where: str) -> Affine:
    if kwargs.get("alpha", 1) != 1 or len(args) != 2:
        raise LoadError(f"unsupported form of {kind} at {where}")
    var_first = args[0] is VAR
    const = args[1] if var_first else args[0]
    if const is VAR:
        raise LoadError(f"{kind} of the input with itself at {where} is not supported")
    c = layers.as_f64(const)
    batched = (1, *shape)
    if np.broadcast_shapes(c.shape, batched) != batched:
        raise LoadError(f"{kind} at {where}: constant of shape {c.shape} would broadcast the activation beyond shape {batched}")
    return layers.constant_arith(kind, np.broadcast_to(c, batched)[0], var_first, shape, name, where)


# --- children in registration order ------------------------------------------------------------
def convert_children(module: Any, input_shape: Shape, kind_of: Callable[[Any], str], notes: list) -> list:
    """Ops from the leaf submodules in registration order (containers are entered recursively).

    A Linear that follows a multi-dimensional activation whose size matches its input features is
    preceded by an implicit flatten (the forward's ``x.view(N, -1)``); this is recorded in ``notes``.
    """
    ops: list = []
    shape = tuple(input_shape)
    for pos, (name, m) in enumerate(_leaves(module, kind_of)):
        kind = kind_of(m)
        where = f"position {pos} ({name})"
        norm = normalize_like(m)
        if norm is not None and kind not in SUPPORTED:
            ops.append(layers.input_normalization(norm[0], norm[1], shape, name))
            continue
        if kind == "Linear" and len(shape) > 1 and int(np.prod(shape)) == int(m.weight.shape[1]) != shape[-1]:
            shape = (int(np.prod(shape)),)
            notes.append(f"implicit flatten before {name}")
        new_ops, shape = convert_leaf(kind, m, shape, name, where)
        ops += new_ops
    return ops


def _leaves(module: Any, kind_of: Callable[[Any], str], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if kind_of(child) in SUPPORTED or not list(child.named_children()):
            out.append((full, child))
        else:
            out += _leaves(child, kind_of, full + ".")
    return out
