"""The records of a report and their JSON form: :class:`Record` (a method on one input at one eps) and
:class:`Radius` (a method's certified radius on one input); the report's error type.

The leaf of the report modules: :mod:`verify.report_summary`, :mod:`verify.report_plots`,
:mod:`verify.report_html` and :mod:`verify.report` import it, it imports none of them.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from verify.results import MethodResult, SolverStatus, Verdict

ATTACK = "attack"
_NONFINITE_FIELDS = ("bound", "time_s")
_RECORD_KEYS = {"index", "label", "eps", "method", "verdict", "bound", "time_s", "status", "message", "nonfinite",
                "margins"}


class ReportError(ValueError):
    """A record or report document is malformed (bad field, duplicate record, invalid JSON)."""


def _same(a: Any, b: Any) -> bool:
    """Equality with NaN equal to NaN (for floats that may be non-finite, and tuples of them)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return bool(a == b)


def _nonfinite_name(v: float) -> str:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


@dataclass(frozen=True, eq=False)
class Record:
    """One method on one input at one radius.

    ``eps`` is in input units (``None`` for properties that are not eps-balls, e.g. VNN-LIB boxes);
    ``bound`` is the method's sound lower bound on the worst-case margin (> 0 proves the property) or,
    for the attack, the smallest margin found; ``time_s`` is wall time in seconds. Equality treats NaN
    as equal to NaN. ``margins`` holds the method's value on each margin row (``None`` when not kept): a
    sound lower bound per row for the verifiers (their optimum in compare mode, see
    :attr:`verify.options.Options.compare`), the smallest value seen per row for the attack. In JSON a
    non-finite entry of ``margins`` is written as the string ``"inf"``, ``"-inf"`` or ``"nan"``.
    """

    index: int
    label: int | None
    eps: float | None
    method: str
    verdict: Verdict
    bound: float
    time_s: float
    status: SolverStatus
    message: str = ""
    margins: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ReportError(f"record index must be an integer >= 0, got {self.index!r}")
        if self.label is not None and (isinstance(self.label, bool) or not isinstance(self.label, int)):
            raise ReportError(f"record label must be an integer or None, got {self.label!r}")
        if self.eps is not None and not (isinstance(self.eps, float) and math.isfinite(self.eps) and self.eps >= 0):
            raise ReportError(f"record eps must be a finite float >= 0 or None, got {self.eps!r}")
        if not isinstance(self.method, str) or not self.method:
            raise ReportError(f"record method must be a non-empty string, got {self.method!r}")
        if not isinstance(self.verdict, Verdict) or not isinstance(self.status, SolverStatus):
            raise ReportError(f"record verdict/status must be Verdict/SolverStatus, got {self.verdict!r}/{self.status!r}")
        for name in _NONFINITE_FIELDS:
            if not isinstance(getattr(self, name), float):
                raise ReportError(f"record {name} must be a float, got {getattr(self, name)!r}")
        if not isinstance(self.message, str):
            raise ReportError(f"record message must be a string, got {self.message!r}")
        if self.margins is not None and not (isinstance(self.margins, tuple)
                                             and all(isinstance(v, float) for v in self.margins)):
            raise ReportError(f"record margins must be a tuple of floats or None, got {self.margins!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    def __hash__(self) -> int:
        return hash((self.index, self.eps, self.method, self.verdict))

    @property
    def key(self) -> tuple[int, float | None, str]:
        """``(index, eps, method)``: unique within a report."""
        return (self.index, self.eps, self.method)

    @staticmethod
    def from_result(index: int, label: int | None, eps: float | None, result: MethodResult) -> "Record":
        """The record of ``result`` for input ``index`` (true class ``label``) at radius ``eps``."""
        return Record(
            int(index), None if label is None else int(label), None if eps is None else float(eps),
            str(result.method), result.verdict, float(result.bound), float(result.time_s), result.status,
            str(result.message), _margins_of(result.margin_bounds),
        )

    def to_dict(self) -> dict:
        """JSON-safe dict: enums by value; non-finite ``bound``/``time_s`` as ``null`` plus ``"nonfinite"``."""
        d: dict[str, Any] = {
            "index": self.index, "label": self.label, "eps": self.eps, "method": self.method,
            "verdict": self.verdict.value, "bound": self.bound, "time_s": self.time_s,
            "status": self.status.value, "message": self.message,
        }
        nonfinite = {k: _nonfinite_name(d[k]) for k in _NONFINITE_FIELDS if not math.isfinite(d[k])}
        if nonfinite:
            d.update({k: None for k in nonfinite})
            d["nonfinite"] = nonfinite
        if self.margins is not None:
            d["margins"] = [v if math.isfinite(v) else _nonfinite_name(v) for v in self.margins]
        return d

    @staticmethod
    def from_dict(d: dict) -> "Record":
        """Inverse of :meth:`to_dict`; raises :class:`ReportError` naming the bad field."""
        if not isinstance(d, dict):
            raise ReportError(f"a record must be a JSON object, got {type(d).__name__}")
        missing = sorted({"index", "method", "verdict", "bound", "time_s", "status"} - d.keys())
        extra = sorted(d.keys() - _RECORD_KEYS)
        if missing or extra:
            raise ReportError(f"record {d.get('index', '?')}: missing fields {missing}, unknown fields {extra}")
        nonfinite = d.get("nonfinite") or {}
        if not isinstance(nonfinite, dict):
            raise ReportError(f"record {d.get('index', '?')}: 'nonfinite' must be an object, got {nonfinite!r}")
        try:
            floats = {k: _float_field(d[k], nonfinite.get(k), k) for k in _NONFINITE_FIELDS}
            eps = d.get("eps")
            if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float))):
                raise ReportError(f"eps must be a number or null, got {eps!r}")
            return Record(
                d["index"], d.get("label"), None if eps is None else float(eps), d["method"],
                Verdict(d["verdict"]), floats["bound"], floats["time_s"], SolverStatus(d["status"]),
                d.get("message", ""), _margins_field(d.get("margins")),
            )
        except (TypeError, ValueError) as err:
            raise ReportError(f"record {d.get('index', '?')} ({d.get('method', '?')}): {err}") from None


def _float_field(value: Any, kind: str | None, name: str) -> float:
    if value is None:
        if kind not in (None, "inf", "-inf", "nan"):
            raise ReportError(f"{name}: nonfinite kind must be inf, -inf or nan, got {kind!r}")
        return float(kind or "nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{name} must be a number or null, got {value!r}")
    return float(value)


def _margins_of(values: Any) -> tuple[float, ...] | None:
    """Per-row values of a result as a tuple of floats (None when there are none)."""
    if values is None:
        return None
    flat = [float(v) for v in np.ravel(np.asarray(values, dtype=np.float64))]
    return tuple(flat) if flat else None


def _margins_field(value: Any) -> tuple[float, ...] | None:
    """Inverse of the ``margins`` JSON list (numbers, or "inf"/"-inf"/"nan" strings)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ReportError(f"margins must be a list, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, str) and v in ("inf", "-inf", "nan"):
            out.append(float(v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
        else:
            raise ReportError(f"margins entries must be numbers or 'inf', '-inf', 'nan'; got {v!r}")
    return tuple(out)


class RadiusKind(enum.Enum):
    """How a radius search ended; ``message`` says what the numbers mean."""

    BRACKETED = "bracketed"
    CAPPED = "capped"
    MISCLASSIFIED = "misclassified"
    NO_COUNTEREXAMPLE = "no_counterexample"
    ERROR = "error"

    @property
    def message(self) -> str:
        return {
            RadiusKind.BRACKETED: "certified (attack: no counterexample) at lower, not at upper",
            RadiusKind.CAPPED: "certified on the whole input domain: the radius is capped at the domain's extent",
            RadiusKind.MISCLASSIFIED: "the clean input is misclassified: radius 0",
            RadiusKind.NO_COUNTEREXAMPLE: "the attack found no counterexample up to the domain's extent",
            RadiusKind.ERROR: "the method failed during the search; the bracket reached so far is kept",
        }[self]


@dataclass(frozen=True)
class Radius:
    """The radius search of one method on one input (eps in input units, times in seconds).

    ``lower``: largest eps at which the method certified (attack: found no counterexample), 0 when none;
    ``upper``: smallest eps known not certified (attack: with a counterexample), ``None`` when none up to
    ``cap``; ``cap``: the domain's extent around the input; ``tol``: the bisection tolerance;
    ``evaluations``: how many times the method ran; ``time_s``: their wall time.
    """

    index: int
    label: int | None
    method: str
    kind: RadiusKind
    lower: float
    upper: float | None
    cap: float
    tol: float
    evaluations: int
    time_s: float
    message: str = ""

    @property
    def radius(self) -> float | None:
        """The method's radius: ``lower`` for a verifier, ``upper`` for the attack (None: no counterexample)."""
        if self.method == ATTACK:
            return 0.0 if self.kind is RadiusKind.MISCLASSIFIED else self.upper
        return self.lower

    def to_dict(self) -> dict:
        """JSON-safe dict (enums by value)."""
        return {"index": self.index, "label": self.label, "method": self.method, "kind": self.kind.value,
                "radius": self.radius, "lower": self.lower, "upper": self.upper, "cap": self.cap, "tol": self.tol,
                "evaluations": self.evaluations, "time_s": self.time_s, "message": self.message}

    @staticmethod
    def from_dict(d: Any) -> "Radius":
        """Inverse of :meth:`to_dict`; raises :class:`ReportError` naming the bad field."""
        if not isinstance(d, dict):
            raise ReportError(f"a radius record must be a JSON object, got {type(d).__name__}")
        try:
            upper = d.get("upper")
            return Radius(int(d["index"]), None if d.get("label") is None else int(d["label"]), str(d["method"]),
                          RadiusKind(d["kind"]), float(d["lower"]), None if upper is None else float(upper),
                          float(d["cap"]), float(d["tol"]), int(d["evaluations"]), float(d["time_s"]),
                          str(d.get("message", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise ReportError(f"radius record {d.get('index', '?')} ({d.get('method', '?')}): bad or missing {err}") from None
