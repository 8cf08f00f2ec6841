"""Bound-propagation certifiers ("ibp", "crown", "alpha-crown-output", "alpha-crown") as methods returning MethodResult.

Certificates are always computed in float64 (whatever ``options.dtype``) and the rounding slack of
:func:`verify.bounds.margins.rounding_slack` is subtracted before any sign is trusted.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import Tensor

from verify.bounds.margins import margin_lower_bounds, rounding_slack
from verify.network import Network
from verify.options import Options
from verify.registry import BOUND_PROPAGATION, resolve
from verify.results import MethodResult, SolverStatus, Verdict, group_bound
from verify.spec import Property, SpecError

log = logging.getLogger(__name__)


def certify_batch(
    net: Network,
    lower: np.ndarray | Tensor,
    upper: np.ndarray | Tensor,
    C: np.ndarray | Tensor,
    d: np.ndarray | Tensor | None,
    method: str,
    options: Options,
) -> Tensor:
    """Rounding-safe float64 lower bounds on ``C f(x) + d`` for many boxes of one network.

    Args:
        lower, upper: boxes ``(N, in_dim)``.
        C: ``(m, n_out)`` or ``(N, m, n_out)``; d: ``(m,)``, ``(N, m)`` or None (zero).
        method: "ibp" (alias "interval"), "crown", "alpha-crown-output" or "alpha-crown"; see
            :func:`margin_lower_bounds`.

    Returns:
        ``(N, m)`` float64 tensor (no graph): a margin is proved positive on box ``n`` when its
        entry is ``> 0``. NaN (e.g. from overflow) must be read as "not proved".
    """
    method = resolve(method, BOUND_PROPAGATION, "bound method")
    chain = net.torch_chain(torch.float64, options.device)
    lower, upper, C = (torch.as_tensor(t, dtype=torch.float64, device=options.device) for t in (lower, upper, C))
    d = None if d is None else torch.as_tensor(d, dtype=torch.float64, device=options.device)
    if lower.dim() != 2 or lower.shape != upper.shape or lower.shape[1] != net.in_dim:
        raise SpecError(f"boxes must have shape (N, {net.in_dim}); got {tuple(lower.shape)} and {tuple(upper.shape)}")
    if C.shape[-1] != net.out_dim:
        raise SpecError(f"margin matrix has {C.shape[-1]} columns but the network has {net.out_dim} outputs")
    with torch.no_grad():
        lb = margin_lower_bounds(chain, lower, upper, C, d, method, options)
        return lb - rounding_slack(chain, lower, upper, C, d)


def certify_with_bounds(net: Network, prop: Property, method: str, options: Options) -> MethodResult:
    """Certify one property with a bound-propagation method (float64, rounding-safe).

    CERTIFIED when the slack-corrected lower bounds prove every group (``OutputSpec.holds``),
    otherwise UNKNOWN (these methods never falsify). ``bound`` is the group-wise worst-case lower
    bound (:func:`verify.results.group_bound`); ``margin_bounds`` the per-row lower bounds ``(m,)``.
    ``method``: "ibp", "crown", "alpha-crown-output" or "alpha-crown" (see :func:`margin_lower_bounds`).
    """
    start = time.perf_counter()
    box, spec = prop.box, prop.output
    if box.dim != net.in_dim:
        raise SpecError(f"input box has {box.dim} values but the network expects {net.in_dim}")
    lb = certify_batch(net, box.lower[None], box.upper[None], spec.C, spec.d, method, options)[0].cpu().numpy()
    elapsed = time.perf_counter() - start
    if not np.all(np.isfinite(lb)):
        log.warning("%s produced non-finite bounds on %s", method, net.name)
        return MethodResult(method, Verdict.UNKNOWN, float("nan"), lb, elapsed, SolverStatus.NUMERICAL_ERROR,
                            "non-finite bound (overflow); nothing proved")
    bound = group_bound(spec.groups, lb)
    if spec.holds(lb):
        return MethodResult(method, Verdict.CERTIFIED, bound, lb, elapsed, message=f"worst-case margin >= {bound:.6g}")
    n_open = int(np.sum(~spec.certified_groups(lb)))
    return MethodResult(
        method, Verdict.UNKNOWN, bound, lb, elapsed,
        message=f"{n_open} of {len(spec.groups)} groups not proved (best lower bound {bound:.6g})",
    )
