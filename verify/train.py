"""Torch-only API for training loops: certified bounds every epoch and a certified-training loss.

Nothing here imports a convex solver; :func:`verify` (offline LP/SDP on a held-out batch) imports them lazily.
All functions take a ``torch.nn.Module`` built of Linear, Conv2d, ReLU, Flatten, Identity and Dropout
(ignored), inputs ``x`` of shape ``(N, *input_shape)`` in the model's input units, integer labels ``y`` of
shape ``(N,)`` and ``eps`` in the same units as ``x`` (the L-infinity radius, clipped to ``domain``).
They work on CPU and GPU tensors (everything stays on ``x.device``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from verify.bounds.margins import margin_lower_bounds, rounding_slack
from verify.options import Options
from verify.results import Verdict

Chain = list[tuple[Tensor, Tensor]]


class UnsupportedModelError(ValueError):
    """The module has a layer the training API cannot express as an affine/ReLU chain."""


@dataclass(frozen=True, eq=False)
class CertifyResult:
    """Per-example sound lower bounds on the margins ``z_y - z_j`` (``j != y``) over the eps-ball.

    Attributes:
        lower_bounds: ``(N, n_classes - 1)`` float64, logit units, same device as the inputs.
        verdicts: CERTIFIED where every bound is > 0, else UNKNOWN (no attack is run here).
    """

    lower_bounds: Tensor
    verdicts: tuple[Verdict, ...]

    @property
    def certified(self) -> Tensor:
        """``(N,)`` bool."""
        return torch.tensor([v is Verdict.CERTIFIED for v in self.verdicts], device=self.lower_bounds.device)

    @property
    def certified_accuracy(self) -> float:
        """Fraction of the batch certified (misclassified inputs never are)."""
        return float(self.certified.float().mean()) if self.verdicts else 0.0


def module_chain(model: nn.Module, input_shape: Sequence[int]) -> Chain:
    """Differentiable ``[(W, b), ...]`` of ``model`` (ReLU between pairs), on the parameters' device/dtype.

    Convolutions are unrolled to dense matrices by applying them to the identity basis (fine up to
    MNIST/CIFAR-sized small convnets). Raises :class:`UnsupportedModelError` naming the layer.
    """
    layers = list(_flatten_modules(model))
    p = next(model.parameters())
    shape = tuple(int(s) for s in input_shape)
    chain: Chain = []
    pending: tuple[Tensor, Tensor] | None = None
    for pos, (name, mod) in enumerate(layers):
        if isinstance(mod, (nn.Flatten, nn.Identity, nn.Dropout)):
            shape = (int(torch.tensor(shape).prod()),) if isinstance(mod, nn.Flatten) else shape
            continue
        if isinstance(mod, nn.ReLU):
            if pending is None:
                raise UnsupportedModelError(f"ReLU at position {pos} ({name}) does not follow an affine layer")
            chain.append(pending)
            pending = None
            continue
        if isinstance(mod, nn.Linear):
            w, b = mod.weight, mod.bias if mod.bias is not None else torch.zeros(mod.out_features, device=p.device, dtype=p.dtype)
            shape = (mod.out_features,)
        elif isinstance(mod, nn.Conv2d):
            w, b, shape = _conv_matrix(mod, shape)
        else:
            raise UnsupportedModelError(f"unsupported layer {type(mod).__name__} at position {pos} ({name})")
        pending = (w, b) if pending is None else (w @ pending[0], w @ pending[1] + b)
    if pending is None:
        raise UnsupportedModelError("the model must end with a Linear or Conv2d layer producing the logits")
    chain.append(pending)
    return chain


def _flatten_modules(model: nn.Module):
    if isinstance(model, nn.Sequential):
        for name, child in model.named_children():
            for sub_name, sub in _flatten_modules(child):
                yield (f"{name}.{sub_name}" if sub_name else name), sub
    else:
        yield "", model


def _conv_matrix(conv: nn.Conv2d, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    if len(shape) != 3:
        raise UnsupportedModelError(f"Conv2d expects a (C, H, W) input, got shape {shape}")
    d = int(torch.tensor(shape).prod())
    eye = torch.eye(d, device=conv.weight.device, dtype=conv.weight.dtype).reshape(d, *shape)
    out = F.conv2d(eye, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    out_shape = tuple(out.shape[1:])
    w = out.reshape(d, -1).T
    bias = conv.bias if conv.bias is not None else torch.zeros(out_shape[0], device=w.device, dtype=w.dtype)
    b = bias[:, None, None].expand(out_shape).reshape(-1)
    return w, b, out_shape


def margin_matrix(y: Tensor, n_classes: int, dtype: torch.dtype) -> Tensor:
    """``(N, n_classes - 1, n_classes)``: rows ``e_y - e_j`` for ``j != y`` in increasing ``j``."""
    n = y.shape[0]
    eye = torch.eye(n_classes, dtype=dtype, device=y.device)
    full = eye[y][:, None, :] - eye[None, :, :]  # (N, K, K): row j is e_y - e_j
    keep = ~torch.nn.functional.one_hot(y, n_classes).bool()  # drop j == y
    return full[keep].reshape(n, n_classes - 1, n_classes)


def _box(x: Tensor, eps: float, domain: tuple[float, float], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    flat = x.reshape(x.shape[0], -1).to(dtype)
    return (flat - eps).clamp(min=domain[0]), (flat + eps).clamp(max=domain[1])




def certify(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, method: str = "crown",
    options: Options | None = None, domain: tuple[float, float] = (0.0, 1.0),
) -> CertifyResult:
    """Sound per-example bounds (computed in float64, no gradient) and verdicts for a batch.

    ``method``: "ibp", "crown", "alpha-crown-output" (slopes optimized for the margins only, hidden-layer
    bounds CROWN's) or "alpha-crown" (slopes optimized for every layer's bounds, as the per-property
    method of the same name; slower, tighter). ``eps`` and ``domain`` are in the units of ``x``.
    """
    with torch.no_grad():
        chain = [(w.to(torch.float64), b.to(torch.float64)) for w, b in module_chain(model, x.shape[1:])]
        lower, upper = _box(x, eps, domain, torch.float64)
        C = margin_matrix(y, chain[-1][0].shape[0], torch.float64)
        raw = margin_lower_bounds(chain, lower, upper, C, None, method, options or Options())
        lb = raw - rounding_slack(chain, lower, upper, C, None)  # float64 rounding of the bound itself
    verdicts = tuple(Verdict.CERTIFIED if bool((row > 0).all()) else Verdict.UNKNOWN for row in torch.nan_to_num(lb, nan=-1.0))
    return CertifyResult(lb, verdicts)


def robust_loss(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, method: str = "ibp",
    domain: tuple[float, float] = (0.0, 1.0), options: Options | None = None,
) -> Tensor:
    """Differentiable certified-training loss: cross-entropy of the worst-case logits.

    With lower bounds ``L_j`` on ``z_y - z_j``, the logits ``(0 for y, -L_j for j)`` dominate every logit
    vector reachable in the ball, so the loss upper-bounds the worst-case cross-entropy. ``method``:
    "ibp" or "crown" (or "alpha-crown-output" / "alpha-crown", slower). Computed in the parameters' dtype.
    Returns a scalar.
    """
    dtype = next(model.parameters()).dtype
    chain = module_chain(model, x.shape[1:])
    lower, upper = _box(x, eps, domain, dtype)
    lb = margin_lower_bounds(chain, lower, upper, margin_matrix(y, chain[-1][0].shape[0], dtype), None, method, options or Options())
    worst = torch.cat([torch.zeros_like(lb[:, :1]), -lb], dim=1)  # class y moved to column 0
    return F.cross_entropy(worst, torch.zeros_like(y))


def verify(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, methods: Sequence[str] = ("attack", "crown", "lp"),
    options: Options | None = None, domain: tuple[float, float] = (0.0, 1.0), client: Any = None, workers: int = 1,
):
    """Offline check of a held-out batch with any methods (LP/SDP included): the CLI's report object.

    ``client``: a ``distributed.Client``; the inputs then run on its Dask cluster (a float64 copy of the
    model is scattered to every worker, which must run the same verify version). ``workers``: without a
    client, the number of local worker processes (1: in this process; more needs the calling script's
    ``if __name__ == "__main__":`` guard, as for any spawned process). Records come back in input order.
    Returns a :class:`verify.report.Report` (render with ``.table()``, ``.to_json()``, ``.to_html()``).
    """
    from verify.load import from_module
    from verify.report import Report
    from verify.runner import make_tasks, run_tasks, validate_tasks
    from verify.spec import domain_notice

    frozen = copy.deepcopy(model).to("cpu", torch.float64).eval()  # the caller's model is left untouched
    loaded = from_module(frozen, tuple(x.shape[1:]), domain=domain)
    xs = x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64).numpy()
    tasks = make_tasks(xs, y.detach().cpu().numpy(), (float(eps),))
    validate_tasks(loaded.network, tasks)
    executor = _executor(loaded.network.digest(), frozen, tuple(x.shape[1:]), domain, client, workers)
    records = run_tasks(loaded.network, tasks, tuple(methods), options or Options(), loaded.reference, executor=executor)
    meta = {"network": loaded.network.describe(), "network_hash": loaded.network.digest(), "eps": [float(eps)],
            "eps_units": "input units", "methods": list(methods), "source": "verify.train.verify",
            "options": options or Options()}  # the report reads options.compare (compare or verdict mode)
    notice = domain_notice((float(eps),), loaded.network.domain_lower, loaded.network.domain_upper)
    if notice:
        meta["notices"] = [notice]
    return Report(records, meta)


def _executor(digest: str, module: nn.Module, input_shape: tuple, domain: tuple, client: Any, workers: int):  # noqa: ANN202
    """A Dask or local-process executor for :func:`verify` (None: run in this process)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if client is None and workers == 1:
        return None
    from verify.worker import ModuleSource

    source = ModuleSource(digest, module, input_shape, domain)
    if client is not None:
        from verify.cluster import DaskExecutor

        return DaskExecutor(client, source)
    from verify.pool import LocalPool

    return LocalPool(source, workers)
