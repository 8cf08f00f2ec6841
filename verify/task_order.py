"""The order in which an executor hands out tasks: the expensive ones first.

Workers take tasks in turn, so one expensive task started last keeps one worker busy while the others
idle (measured: 60 rsl18 pgd_nn SDP tasks of 0.7-11.7 s, in input order, leave 5.4 s of 52 s idle on
one of two workers). Handing out the expensive ones first (longest-processing-time first) fixes that,
and for the costly methods the number of unstable ReLUs under CROWN's bounds predicts a task's cost
well (correlation 0.70 with the SDP's seconds there, the two longest tasks among the top three) for
about 4 ms per task. Cheap methods are left in the order given: ordering would cost more than it saves.
"""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

import numpy as np

from verify.network import Network

#: methods too cheap per task for their tasks to be worth ordering
CHEAP_METHODS = frozenset({"attack", "ibp", "interval", "crown"})


class _HasBall(Protocol):
    x: np.ndarray
    eps: float


T = TypeVar("T", bound=_HasBall)


def unstable_count(net: Network, x: np.ndarray, eps: float) -> int:
    """ReLUs whose CROWN pre-activation bounds straddle 0 on the eps-ball around ``x`` ``(in_dim,)``."""
    from verify.bounds import crown_unstable_count
    from verify.spec import linf_ball

    return crown_unstable_count(net, linf_ball(x, eps, net.domain_lower, net.domain_upper))


def hardest_first(net: Network | None, tasks: Sequence[T], methods: Sequence[str]) -> list[T]:
    """``tasks`` with the most unstable ReLUs first (ties keep their order); unchanged when every method
    is cheap or there is no network here to bound."""
    if net is None or all(m in CHEAP_METHODS for m in methods) or len(tasks) < 3:
        return list(tasks)
    cost = [unstable_count(net, t.x, t.eps) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -cost[i])
    return [tasks[i] for i in order]
