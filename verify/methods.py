"""Method registry: one name -> one function ``(net, prop, options, reference) -> MethodResult``.

Solver-backed methods are imported lazily so that the torch-only paths never import cvxpy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

import numpy as np

from verify.network import Network
from verify.options import Options
from verify.results import MethodResult, SolverStatus, Verdict
from verify.spec import Property

log = logging.getLogger(__name__)

Reference = Callable[[np.ndarray], np.ndarray]

#: every method, cheapest first; "exact" is a MILP meant for small networks; "bab" is branch and bound
METHODS = ("attack", "ibp", "crown", "alpha-crown", "lp", "sdp", "exact", "bab")
#: methods that can prove a property (everything but the attack)
CERTIFIERS = METHODS[1:]


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
    if name == "attack":
        from verify.attack import pgd_attack

        return pgd_attack(net, prop, options, reference)
    if name in ("ibp", "crown", "alpha-crown"):
        from verify.bounds.method import certify_with_bounds

        return certify_with_bounds(net, prop, name, options)
    if name == "lp":
        from verify.relax.lp import certify_lp

        return certify_lp(net, prop, options)
    if name == "sdp":
        from verify.relax.sdp import certify_sdp

        return certify_sdp(net, prop, options)
    if name == "exact":
        from verify.relax.milp import certify_exact

        return certify_exact(net, prop, options)
    if name == "bab":
        from verify.bab import certify_bab

        return certify_bab(net, prop, options, reference)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def parse_methods(text: str) -> tuple[str, ...]:
    """``"attack,crown,lp"`` -> ``("attack", "crown", "lp")``; raises ValueError naming an unknown method."""
    names = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    aliases = {"interval": "ibp", "alpha": "alpha-crown", "alphacrown": "alpha-crown", "pgd": "attack", "milp": "exact"}
    names = tuple(aliases.get(n, n) for n in names)
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}")
    return names
