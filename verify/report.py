"""Comparison report: one :class:`Record` per (input, method, eps), summaries per (method, eps), JSON and HTML.

JSON form (see ``verify/report_schema.json``): ``{"schema": "verify-report", "format_version": 1,
"meta": {...}, "records": [...], "summaries": [...]}``. Enums are written by value. JSON has no
infinities or NaN, so a non-finite ``bound`` or ``time_s`` is written as ``null`` and its kind
(``"inf"``, ``"-inf"`` or ``"nan"``) is kept in the record's ``"nonfinite"`` object, so a round trip is
exact. ``summaries`` are derived data for other tools; :meth:`Report.from_json` recomputes them.

The HTML page lives in :mod:`verify.report_html`, its plots in :mod:`verify.report_plots`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from verify.report_summary import (
    METHOD_ORDER, Conflict, ConflictKind, MethodSummary, find_conflicts, format_table, method_rank, summarize,
)
from verify.results import MethodResult, SolverStatus, Verdict

__all__ = [
    "METHOD_ORDER", "Conflict", "ConflictKind", "MethodSummary", "Record", "Report", "ReportError",
    "collect_versions", "find_conflicts", "make_meta", "method_rank", "summarize", "validate_report_json",
]

FORMAT_VERSION = 1
SCHEMA_NAME = "verify-report"
EPS_UNITS = "input units, e.g. pixels in [0,1]"
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


def collect_versions() -> dict[str, str]:
    """Versions of python, torch, numpy, cvxpy and verify (``"absent"`` where not installed)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "cvxpy", "verify"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def make_meta(network: Any = None, options: Any = None, command_line: Sequence[str] | None = None,
              start_time: datetime | None = None, **extra: Any) -> dict:
    """Standard run metadata: versions, options (a dataclass or dict), network name/shape/hash, eps units,
    command line and start time (ISO 8601, UTC). ``network`` is a :class:`verify.network.Network`."""
    meta: dict[str, Any] = {"versions": collect_versions(), "eps_units": EPS_UNITS}
    if options is not None:
        meta["options"] = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    if network is not None:
        meta["network"] = {"name": network.name, "shape": network.describe(), "hash": network.digest()}
    if command_line is not None:
        meta["command_line"] = list(command_line)
    meta["start_time"] = (start_time or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    meta.update(extra)
    return json_safe(meta)


def json_safe(obj: Any, where: str = "meta") -> Any:
    """``obj`` as plain JSON values: dataclasses and dicts to dicts, tuples to lists, enums by value,
    paths to strings, numpy scalars/arrays to Python, non-finite floats to ``None``."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, enum.Enum):
        return json_safe(obj.value, where)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe(dataclasses.asdict(obj), where)
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise ReportError(f"{where}: keys must be strings, got {sorted(map(repr, obj))}")
        return {k: json_safe(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return json_safe(obj.tolist(), where)
    raise ReportError(f"{where}: cannot store a {type(obj).__name__} in the report JSON")


@dataclass
class Report:
    """All records of a run and its metadata (made JSON-safe on construction; ``versions`` and
    ``eps_units`` are filled in when absent)."""

    records: list[Record]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.records = list(self.records)
        meta = json_safe(dict(self.meta))
        meta.setdefault("versions", collect_versions())
        meta.setdefault("eps_units", EPS_UNITS)
        self.meta = meta
        _check_unique(self.records)

    def summaries(self) -> list[MethodSummary]:
        """One summary per (method, eps); see :func:`summarize`."""
        _check_unique(self.records)
        return summarize(self.records)

    def conflicts(self) -> list[Conflict]:
        """Contradictions between methods (each one is a soundness bug somewhere); see :func:`find_conflicts`."""
        return find_conflicts(self.records)

    def methods(self) -> list[str]:
        """Methods present, in :func:`method_rank` order."""
        return sorted({r.method for r in self.records}, key=method_rank)

    def table(self) -> str:
        """Terminal table of :meth:`summaries`, one block per eps, with a warning line per conflict."""
        return format_table(self.summaries(), self.conflicts(), self.meta.get("eps_units", EPS_UNITS))

    def to_json_dict(self) -> dict:
        """The JSON document (see the module docstring)."""
        _check_unique(self.records)
        return {
            "schema": SCHEMA_NAME, "format_version": FORMAT_VERSION, "meta": self.meta,
            "records": [r.to_dict() for r in self.records],
            "summaries": [s.to_dict() for s in self.summaries()],
        }

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_json_dict` to ``path`` (UTF-8, strict JSON: no NaN/Infinity)."""
        text = json.dumps(self.to_json_dict(), indent=1, allow_nan=False, ensure_ascii=False)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @staticmethod
    def from_json_dict(obj: dict) -> "Report":
        """Inverse of :meth:`to_json_dict`. The document minus its records is validated against the schema
        when ``jsonschema`` is installed; each record is checked by :meth:`Record.from_dict` (the same type rules,
        about 40 times faster on large runs)."""
        try:
            validate_report_json({**obj, "records": []} if isinstance(obj, dict) else obj)
        except ModuleNotFoundError:  # jsonschema absent: the basic shape, then Record.from_dict's checks
            if not isinstance(obj, dict) or obj.get("schema") != SCHEMA_NAME or not isinstance(obj.get("records"), list):
                raise ReportError("not a verify report: needs 'schema': 'verify-report' and a 'records' list") from None
        return Report([Record.from_dict(d) for d in obj["records"]], obj.get("meta", {}))

    @staticmethod
    def from_json(path: str | Path) -> "Report":
        """Read a report written by :meth:`to_json`; raises :class:`ReportError` for invalid documents."""
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise ReportError(f"cannot read report {path}: {err.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ReportError(f"{path} is not valid JSON: {err}") from None
        try:
            return Report.from_json_dict(obj)
        except ReportError as err:
            raise ReportError(f"{path}: {err}") from None

    def to_html(self, path: str | Path, title: str | None = None) -> None:
        """Write one self-contained HTML page (tables and embedded PNG plots) to ``path``."""
        from verify.report_html import render_html  # noqa: PLC0415 (matplotlib only on this path)

        Path(path).write_text(render_html(self, title), encoding="utf-8")


def _check_unique(records: Iterable[Record]) -> None:
    seen: set[tuple[int, float | None, str]] = set()
    for r in records:
        if not isinstance(r, Record):
            raise ReportError(f"report records must be Record objects, got {type(r).__name__}")
        if r.key in seen:
            raise ReportError(f"duplicate record: input {r.index}, eps {r.eps}, method {r.method}")
        seen.add(r.key)


def _schema() -> dict:
    from importlib import resources

    return json.loads(resources.files("verify").joinpath("report_schema.json").read_text(encoding="utf-8"))


def validate_report_json(obj: dict) -> None:
    """Validate a report document against ``verify/report_schema.json``.

    Raises :class:`ReportError` (a ``ValueError``) naming the first offending location, and
    ``ModuleNotFoundError`` when the optional ``jsonschema`` package is missing.
    """
    import jsonschema  # noqa: PLC0415 (optional dependency)

    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(document)"
        raise ReportError(f"report JSON does not match the schema at {where}: {error.message}")
