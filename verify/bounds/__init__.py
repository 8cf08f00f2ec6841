"""Bound propagation in torch (interval, CROWN, alpha-CROWN).

``preactivation_bounds`` is the entry point used by the LP, SDP and MILP relaxations.
"""

from __future__ import annotations

import numpy as np
import torch

from verify.bounds.interval import interval_bounds
from verify.network import Network
from verify.options import Options
from verify.spec import InputBox


def preactivation_bounds(
    net: Network, box: InputBox, method: str = "crown", options: Options | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sound float64 bounds on every layer's pre-activation ``W_i z_i + b_i`` over ``box``.

    Returns one ``(lower, upper)`` pair of shape ``(out_i,)`` per layer, the last being the logits.
    ``method`` is "interval", "crown" or "alpha-crown".
    """
    lo = torch.as_tensor(box.lower, dtype=torch.float64)[None]
    hi = torch.as_tensor(box.upper, dtype=torch.float64)[None]
    if method != "interval":
        raise NotImplementedError(method)  # CROWN / alpha-CROWN: being added in verify/bounds/crown.py
    return [(l[0].numpy(), u[0].numpy()) for l, u in interval_bounds(net.torch_chain(), lo, hi)]


__all__ = ["interval_bounds", "preactivation_bounds"]
