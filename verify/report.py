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

from verify.report_record import Radius, RadiusKind, Record, ReportError
from verify.report_compare import headline, radius_table
from verify.report_summary import (
    METHOD_ORDER, Conflict, ConflictKind, MethodSummary, find_conflicts, find_radius_conflicts, format_table, method_rank,
    summarize,
)

__all__ = [
    "METHOD_ORDER", "Conflict", "ConflictKind", "MethodSummary", "Radius", "RadiusKind", "Record", "Report", "ReportError",
    "collect_versions", "find_conflicts", "make_meta", "method_rank", "summarize", "validate_report_json",
]

FORMAT_VERSION = 2  # 2 added record "margins" and "radii"; version 1 documents are still read
SCHEMA_NAME = "verify-report"
EPS_UNITS = "input units, e.g. pixels in [0,1]"


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
    radii: list[Radius] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.records = list(self.records)
        self.radii = list(self.radii)
        _check_unique_radii(self.radii)
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
        """Contradictions between methods (each one is a soundness bug somewhere); see :func:`find_conflicts`
        (and :func:`find_radius_conflicts` for the radii)."""
        return find_conflicts(self.records) + find_radius_conflicts(self.radii)

    def methods(self) -> list[str]:
        """Methods present, in :func:`method_rank` order."""
        return sorted({r.method for r in self.records}, key=method_rank)

    def table(self) -> str:
        """What the terminal shows: the :meth:`headline`, the table of :meth:`summaries` (one block per eps, a
        warning line per conflict) and, when radii were searched, one radius line per method."""
        parts = [format_table(self.summaries(), self.conflicts(), self.meta.get("eps_units", EPS_UNITS))]
        if self.radii:
            parts.append(radius_table(self.radii))
        head = self.headline()
        return "\n\n".join((["\n".join(head)] if head else []) + parts)

    def headline(self) -> list[str]:
        """The report's first lines (plain text); see :func:`verify.report_compare.headline`."""
        return headline(self.records, self.radii, self.meta)

    def to_json_dict(self) -> dict:
        """The JSON document (see the module docstring)."""
        _check_unique(self.records)
        return {
            "schema": SCHEMA_NAME, "format_version": FORMAT_VERSION, "meta": self.meta,
            "records": [r.to_dict() for r in self.records],
            "summaries": [s.to_dict() for s in self.summaries()],
            "radii": [r.to_dict() for r in self.radii],
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
        radii = obj.get("radii") or []
        if not isinstance(radii, list):
            raise ReportError("'radii' must be a list of radius records")
        return Report([Record.from_dict(d) for d in obj["records"]], obj.get("meta", {}),
                      [Radius.from_dict(d) for d in radii])

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

        _check_unique(self.records)
        Path(path).write_text(render_html(self.records, self.meta, title, self.radii), encoding="utf-8")


def _check_unique(records: Iterable[Record]) -> None:
    seen: set[tuple[int, float | None, str]] = set()
    for r in records:
        if not isinstance(r, Record):
            raise ReportError(f"report records must be Record objects, got {type(r).__name__}")
        if r.key in seen:
            raise ReportError(f"duplicate record: input {r.index}, eps {r.eps}, method {r.method}")
        seen.add(r.key)


def _check_unique_radii(radii: Iterable[Radius]) -> None:
    seen: set[tuple[int, str]] = set()
    for r in radii:
        if not isinstance(r, Radius):
            raise ReportError(f"report radii must be Radius objects, got {type(r).__name__}")
        if (r.index, r.method) in seen:
            raise ReportError(f"duplicate radius: input {r.index}, method {r.method}")
        seen.add((r.index, r.method))


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
