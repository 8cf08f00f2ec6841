"""Running a method: one name -> one function ``(net, prop, options, reference) -> MethodResult``.

The names, aliases and runners are listed once in :mod:`verify.registry`; runners are imported lazily
so that the torch-only paths never import cvxpy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numpy as np

from verify.network import Network
from verify.options import Options
from verify.registry import CERTIFIERS, METHODS, info, load_runner, parse_methods
from verify.results import MethodResult, SolverStatus, Verdict
from verify.spec import Property

log = logging.getLogger(__name__)

Reference = Callable[[np.ndarray], np.ndarray]

__all__ = ["CERTIFIERS", "METHODS", "Reference", "parse_methods", "run_method"]


def run_method(
    name: str, net: Network, prop: Property, options: Options, reference: Reference | None = None
) -> MethodResult:
    """Run one method on one property. Unexpected failures become an ERROR result with the message.

    ``reference`` evaluates the original model (``(N, in_dim)`` -> logits) and is used by the attack to
    re-check a counterexample before FALSIFIED is reported.
    """
    start = time.perf_counter()
    try:
        return _recheck(_dispatch(name, net, prop, options, reference), net, prop, reference)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as err:  # a method failing must not kill a long run; it is recorded honestly
        log.debug("method %s failed", name, exc_info=True)
        m = prop.output.n_margins
        return MethodResult(
            name, Verdict.ERROR, float("nan"), np.full(m, np.nan), time.perf_counter() - start,
            SolverStatus.NUMERICAL_ERROR, f"{type(err).__name__}: {err}",
        )


def _recheck(res: MethodResult, net: Network, prop: Property, reference: Reference | None) -> MethodResult:
    """A FALSIFIED result stands only if its counterexample lies in the input set and violates the
    property on the original model (``reference``, else the float64 network); otherwise UNKNOWN."""
    if res.verdict is not Verdict.FALSIFIED:
        return res
    x = res.counterexample
    if x is None:
        return dataclasses.replace(res, verdict=Verdict.UNKNOWN, message=res.message + " (no counterexample kept)")
    x = np.asarray(x, dtype=np.float64).ravel()
    logits = np.asarray((reference or net.forward)(x[None]), dtype=np.float64)
    if prop.box.contains(x) and bool(prop.output.violated(logits)[0]):
        return res
    log.warning("%s: counterexample did not re-check on the original model; reporting UNKNOWN", res.method)
    return dataclasses.replace(res, verdict=Verdict.UNKNOWN, message=res.message + " (counterexample did not re-check on the original model)")


def _dispatch(name: str, net: Network, prop: Property, options: Options, reference: Reference | None) -> MethodResult:
    entry = info(name)  # ValueError naming the known methods
    extra: dict = {}
    if entry.takes_reference:
        extra["reference"] = reference
    if entry.bound_propagation:
        extra["method"] = entry.name
    return load_runner(entry.name)(net, prop, options=options, **extra)
