"""The one list of verification methods: names, aliases, what each can do and where it lives.

Every part of the package that names methods reads it (the method runner, the torch bound API, the
command line, the training API, the report's ordering). Adding a method is one line in
:data:`TABLE`; its runner is imported lazily, so the torch-only paths never import a convex solver.
This module imports nothing from ``verify``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class MethodInfo:
    """One method.

    Attributes:
        name: the canonical name (CLI ``--methods``, results files, reports).
        runner: ``"module:function"``, called as ``function(net, prop, options=...)`` and returning a
            :class:`verify.results.MethodResult`; with ``reference=`` too when ``takes_reference``,
            with ``method=name`` too when ``bound_propagation``.
        about: one line for ``--help`` and the docs.
        certifies: whether the method can prove a property (everything but an attack).
        aliases: other accepted spellings (lower case).
        bound_propagation: a torch bound method of :mod:`verify.bounds` (usable by
            ``margin_lower_bounds``, ``verify.certify`` and ``verify.robust_loss``).
        takes_reference: the runner re-checks candidates on the original model (``reference``).
    """

    name: str
    runner: str
    about: str
    certifies: bool = True
    aliases: tuple[str, ...] = ()
    bound_propagation: bool = False
    takes_reference: bool = False


#: every method, cheapest first
TABLE: tuple[MethodInfo, ...] = (
    MethodInfo("attack", "verify.attack:pgd_attack", "PGD with restarts (finds counterexamples, never proves)",
               certifies=False, aliases=("pgd",), takes_reference=True),
    MethodInfo("ibp", "verify.bounds.method:certify_with_bounds", "interval bound propagation",
               aliases=("interval",), bound_propagation=True),
    MethodInfo("crown", "verify.bounds.method:certify_with_bounds", "CROWN backward linear bounds",
               bound_propagation=True),
    MethodInfo("alpha-crown-output", "verify.bounds.method:certify_with_bounds",
               "CROWN with optimized lower slopes for the output margins only (hidden-layer bounds stay CROWN's)",
               bound_propagation=True),
    MethodInfo("alpha-crown", "verify.bounds.method:certify_with_bounds",
               "CROWN with optimized lower slopes, for every layer's bounds", aliases=("alpha", "alphacrown"),
               bound_propagation=True),
    MethodInfo("lp", "verify.relax.lp:certify_lp", "triangle LP relaxation (HiGHS), dual bound re-checked"),
    MethodInfo("sdp", "verify.relax.sdp:certify_sdp", "SDP relaxation (Raghunathan et al. 2018), dual bound re-checked"),
    MethodInfo("exact", "verify.relax.milp:certify_exact", "MILP (HiGHS), exact for small networks", aliases=("milp",)),
    MethodInfo("bab", "verify.bab:certify_bab", "branch and bound (beta-CROWN bounds), proofs re-checked; decides",
               aliases=("branch-and-bound",), takes_reference=True),
)

#: canonical names, cheapest first
METHODS: tuple[str, ...] = tuple(m.name for m in TABLE)
#: methods that can prove a property
CERTIFIERS: tuple[str, ...] = tuple(m.name for m in TABLE if m.certifies)
#: torch bound-propagation methods (``verify.bounds.margin_lower_bounds``, ``verify.certify``)
BOUND_PROPAGATION: tuple[str, ...] = tuple(m.name for m in TABLE if m.bound_propagation)

_BY_NAME = {m.name: m for m in TABLE}
_ALIASES = {a: m.name for m in TABLE for a in m.aliases}


def resolve(name: str, among: tuple[str, ...] = METHODS, what: str = "method") -> str:
    """The canonical name of ``name`` (case and surrounding spaces ignored, aliases mapped).

    Raises ValueError ("unknown {what} ...; choose from ...") when the result is not in ``among``.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in among:
        raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(among)}")
    return key


def info(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of a method (aliases accepted)."""
    return _BY_NAME[resolve(name)]


def load_runner(name: str) -> Callable:
    """The runner function of a method, imported on first use."""
    module, _, function = info(name).runner.partition(":")
    return getattr(importlib.import_module(module), function)


def parse_methods(text: str) -> tuple[str, ...]:
    """``"attack,crown,lp"`` -> ``("attack", "crown", "lp")`` (aliases mapped, duplicates dropped).

    Raises ValueError naming every unknown method, or when none is given.
    """
    names, bad = [], []
    for tok in (t.strip() for t in str(text).split(",")):
        if not tok:
            continue
        try:
            names.append(resolve(tok))
        except ValueError:
            bad.append(tok.lower())
    if bad or not names:
        raise ValueError(f"unknown method(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(names))
