"""Projected Adam for the slope (and multiplier) optimizations of alpha-CROWN and branch and bound."""

from __future__ import annotations

import torch
from torch import Tensor


class ProjectedAdam:
    """Adam (Kingma & Ba 2015) on a few tensors, each projected back onto ``[lo, hi]`` after a step.

    Written out (a dozen lines) rather than ``torch.optim.Adam``, whose first use imports
    ``torch._dynamo`` (seconds per process, which a one-property run pays in full).
    """

    def __init__(self, groups: list[tuple[Tensor, float, float | None, float | None]],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups = groups
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p, *_ in groups]
        self.v = [torch.zeros_like(p) for p, *_ in groups]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for (p, lr, lo, hi), m, v in zip(self.groups, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)
            if lo is not None or hi is not None:
                p.clamp_(lo, hi)
            p.grad = None
