"""One report record (a method on one input at one radius) and its JSON form; the report's error type.

The leaf of the report modules: :mod:`verify.report_summary`, :mod:`verify.report_plots`,
:mod:`verify.report_html` and :mod:`verify.report` import it, it imports none of them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from verify.results import MethodResult, SolverStatus, Verdict

_NONFINITE_FIELDS = ("bound", "time_s")
_RECORD_KEYS = {"index", "label", "eps", "method", "verdict", "bound", "time_s", "status", "message", "nonfinite"}


class ReportError(ValueError):
    """A record or report document is malformed (bad field, duplicate record, invalid JSON)."""


def _same(a: Any, b: Any) -> bool:
    """Equality with NaN equal to NaN (for floats that may be non-finite)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _nonfinite_name(v: float) -> str:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


@dataclass(frozen=True, eq=False)
class Record:
    """One method on one input at one radius.

    ``eps`` is in input units (``None`` for properties that are not eps-balls, e.g. VNN-LIB boxes);
    ``bound`` is the method's sound lower bound on the worst-case margin (> 0 proves the property) or,
    for the attack, the smallest margin found; ``time_s`` is wall time in seconds. Equality treats NaN
    as equal to NaN.
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
            str(result.message),
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
                d.get("message", ""),
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
