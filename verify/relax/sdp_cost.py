"""Predicted wall time of the SDP on one input, from the problem's sizes and this machine's measured speed.

The interior-point method's work per iteration (:mod:`verify.solvers.sdp_ipm`) is, with ``n0`` free inputs,
``N`` unstable neurons, ``k = 1 + N`` (the head), ``n = k + n0`` (the matrix side) and ``m = n + 2N (+N with
triangle cuts)`` constraints:

* the Newton matrix's Cholesky factorization, ``m^3 / 3`` flops;
* forming it: two dense ``n x n`` completions (``2 n^2 k``) and the products with the dense rows
  (``~8 n k R``, ``R = 2N`` or ``3N`` rows);
* the search directions: about a dozen products of ``(n x k)`` blocks with the completions (``~24 n k^2``).

Each is converted to seconds with the throughput of this process's BLAS measured once (a small
factorization and a small matrix product, one thread), and multiplied by the iterations a margin takes
(measured on MNIST networks: about 20 from a cold start, 14 warm-started, 8 to a certifying bound), plus
the per-margin overhead (the LP start and the checker). The prediction is meant for choosing methods (is
the SDP affordable within a budget?), not for promises: it is usually within a factor of two.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import scipy.linalg as sla
from threadpoolctl import threadpool_limits

COLD_ITERATIONS = 20  # a margin solved from scratch
WARM_ITERATIONS = 14  # the next margins of the same input (warm start)
CERTIFY_ITERATIONS = 8  # to a first checked bound > 0, when there is one


@functools.lru_cache(maxsize=1)
def machine_speed() -> tuple[float, float]:
    """``(gemm, cholesky)`` throughput of one BLAS thread in flop/s, measured once per process (~50 ms)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 400))
    spd = a @ a.T + 400 * np.eye(400)
    with threadpool_limits(1):
        t0 = time.perf_counter()
        for _ in range(3):
            a @ a
        gemm = 3 * 2 * 400**3 / max(time.perf_counter() - t0, 1e-9)
        t0 = time.perf_counter()
        for _ in range(3):
            sla.cholesky(spd, lower=True, check_finite=False)
        chol = 3 * 400**3 / 3 / max(time.perf_counter() - t0, 1e-9)
    return gemm, chol


def iteration_seconds(n0: int, n_unstable: int, triangle: bool = True) -> float:
    """Predicted seconds of one interior-point iteration for ``n0`` free inputs and ``n_unstable`` neurons."""
    gemm, chol = machine_speed()
    k = 1 + n_unstable
    n = k + n0
    rows = (3 if triangle else 2) * n_unstable
    m = n + rows
    work = 2.0 * n * n * k + 8.0 * n * k * max(rows, 1) + 24.0 * n * k * k
    return (m**3 / 3.0) / chol + work / gemm + 2e-3  # plus ~2 ms of Python per iteration


def predicted_seconds(n0: int, n_unstable: int, margins: int, certify: bool = False, triangle: bool = True) -> float:
    """Predicted seconds of the SDP on ``margins`` rows of one input (tight mode, or certify mode where every
    row is expected to certify), excluding the pre-activation bounds."""
    if margins <= 0:
        return 0.0
    per = iteration_seconds(n0, n_unstable, triangle)
    if n_unstable == 0:
        return 0.01 * margins
    iters = CERTIFY_ITERATIONS * margins if certify else COLD_ITERATIONS + WARM_ITERATIONS * (margins - 1)
    overhead = 0.05 + 2e-9 * n0 * (n0 + n_unstable) * (1 + n_unstable / 100.0)  # LP start and checker per row
    return iters * per + margins * overhead


DEFAULT_BUDGET = 30.0  # seconds per input the SDP may take by default when no --timeout is given


def sdp_fits(net, box, options, budget: float | None = None, rows: int | None = None) -> bool:  # type: ignore[no-untyped-def]
    """Whether the SDP in certify mode on ``rows`` margin rows (default: the outputs minus one) of ``box`` is
    predicted to fit ``budget`` seconds (``options.timeout`` when set, else ``DEFAULT_BUDGET``), judged from
    CROWN's unstable neurons there (alpha-CROWN finds a few less)."""
    from verify.bounds import crown_unstable_count

    budget = budget if budget is not None else (options.timeout or DEFAULT_BUDGET)
    rows = net.out_dim - 1 if rows is None else rows
    n0 = int(np.sum(box.upper > box.lower))
    return predicted_seconds(n0, crown_unstable_count(net, box, options), rows, True, options.sdp_triangle) <= budget
