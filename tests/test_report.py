"""Comparison report: records, summaries against a plain recount, JSON round trip and schema, HTML page."""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import random_network
from verify.options import Options
from verify.report import (
    METHOD_ORDER,
    ConflictKind,
    Record,
    Report,
    ReportError,
    make_meta,
    method_rank,
    validate_report_json,
)
from verify.report_plots import scatter_pair
from verify.report_summary import fmt_eps, summary_row
from verify.results import MethodResult, SolverStatus, Verdict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPS = (0.01, 0.03)
METHODS = ("sdp", "attack", "crown", "lp", "ibp")  # deliberately not in display order


def _result(method: str, verdict: Verdict, bound: float, time_s: float, status: SolverStatus, message: str = "") -> MethodResult:
    return MethodResult(method, verdict, bound, np.array([bound, bound + 1.0]), time_s, status, message)


def _case_results(rng: np.random.Generator, index: int, eps: float) -> list[MethodResult]:
    """A consistent set of results for one input: attack margin a, verifier bounds below it."""
    if index == 7:  # misclassified clean input: every method FALSIFIED without running
        return [_result(m, Verdict.FALSIFIED, -0.4, 0.0, SolverStatus.NOT_RUN, "clean input is misclassified")
                for m in METHODS]
    a = float(rng.normal(0.6, 0.8) - 10 * eps)
    out = [_result("attack", Verdict.FALSIFIED if a <= 0 else Verdict.UNKNOWN, a, float(rng.uniform(0.05, 0.2)),
                   SolverStatus.NOT_APPLICABLE)]
    for m, loose in (("ibp", 4.0), ("crown", 2.0), ("lp", 1.0), ("sdp", 0.3)):
        b = a - loose * abs(float(rng.normal())) - 1e-3
        status = SolverStatus.OPTIMAL if m in ("lp", "sdp") else SolverStatus.NOT_APPLICABLE
        verdict = Verdict.CERTIFIED if b > 0 else (Verdict.FALSIFIED if a <= 0 else Verdict.UNKNOWN)
        time_s = float(rng.uniform(0.001, 5.0))
        if m == "ibp" and index % 4 == 0:
            b, verdict = -math.inf, Verdict.UNKNOWN  # bounds blew up
        if m == "sdp" and index % 5 == 1:
            b, verdict, status = math.nan, Verdict.ERROR, SolverStatus.NUMERICAL_ERROR
        if m == "sdp" and index % 5 == 3:  # a failed solve's bound is meaningless, even when finite
            b, verdict, status = a + 5.0, Verdict.ERROR, SolverStatus.NUMERICAL_ERROR
        if m == "lp" and index % 6 == 2:
            verdict, status, time_s = Verdict.UNKNOWN, SolverStatus.TIME_LIMIT, math.inf
            b = min(b, -0.01)
        out.append(_result(m, verdict, b, time_s, status, "solver <warning> & \"quote\"" if m == "sdp" else ""))
    return out


def _records(n: int = 12, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [Record.from_result(i, i % 10, eps, res) for eps in EPS for i in range(n)
            for res in _case_results(rng, i, eps)]


@pytest.fixture(scope="module")
def report() -> Report:
    net = random_network(1)
    meta = make_meta(net, Options(), ["verify", "net.onnx", "--eps", "0.01,0.03"], extra_note="test <run>")
    return Report(_records(), meta)


def _recount(records: list[Record], method: str, eps: float) -> dict:
    mine = [r for r in records if r.method == method and r.eps == eps]
    count = {v: 0 for v in Verdict}
    for r in mine:
        count[r.verdict] += 1
    times = [r.time_s for r in mine if np.isfinite(r.time_s) and r.status != SolverStatus.NOT_RUN]
    attack = {r.index: r.bound for r in records if r.method == "attack" and r.eps == eps
              and np.isfinite(r.bound) and r.verdict != Verdict.ERROR}
    gaps = [attack[r.index] - r.bound for r in mine if r.index in attack and np.isfinite(r.bound)
            and r.verdict != Verdict.ERROR and r.status != SolverStatus.NOT_RUN]
    return {"n": len(mine), "count": count, "times": times, "gaps": gaps}


def test_record_from_result_and_dict_round_trip() -> None:
    res = _result("sdp", Verdict.UNKNOWN, -math.inf, math.nan, SolverStatus.ITERATION_LIMIT, "stopped")
    rec = Record.from_result(np.int64(3), np.int64(4), np.float64(0.1), res)
    assert (rec.index, rec.label, rec.eps, rec.method, rec.verdict, rec.status) == (3, 4, 0.1, "sdp", Verdict.UNKNOWN,
                                                                                   SolverStatus.ITERATION_LIMIT)
    d = rec.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON
    assert d["bound"] is None and d["time_s"] is None and d["nonfinite"] == {"bound": "-inf", "time_s": "nan"}
    assert d["verdict"] == "unknown" and d["status"] == "iteration_limit"
    back = Record.from_dict(json.loads(json.dumps(d)))
    assert back == rec and back.bound == -math.inf and math.isnan(back.time_s)
    assert Record.from_dict(Record.from_result(0, None, None, _result("lp", Verdict.CERTIFIED, 0.5, 1.0,
                                                                      SolverStatus.OPTIMAL)).to_dict()).label is None


@pytest.mark.parametrize("change, word", [
    ({"verdict": "proved"}, "proved"), ({"index": -1}, "index"), ({"unknown_field": 1}, "unknown_field"),
    ({"bound": "0.5"}, "bound"), ({"eps": math.inf}, "eps"),
])
def test_record_from_dict_rejects_bad_fields(change: dict, word: str) -> None:
    d = Record.from_result(1, 2, 0.1, _result("lp", Verdict.CERTIFIED, 0.5, 1.0, SolverStatus.OPTIMAL)).to_dict()
    with pytest.raises(ReportError, match=re.escape(word)):
        Record.from_dict({**d, **change})


def test_summaries_match_recount(report: Report) -> None:
    summaries = report.summaries()
    assert {(s.method, s.eps) for s in summaries} == {(m, e) for m in METHODS for e in EPS}
    for s in summaries:
        c = _recount(report.records, s.method, s.eps)
        assert s.n == c["n"] == 12
        assert (s.certified, s.falsified, s.unknown, s.error) == tuple(c["count"][v] for v in Verdict)
        assert s.certified_accuracy == pytest.approx(c["count"][Verdict.CERTIFIED] / c["n"])
        assert s.robust_accuracy_upper_bound == pytest.approx(1 - c["count"][Verdict.FALSIFIED] / c["n"])
        assert s.mean_time_s == pytest.approx(np.mean(c["times"]))
        assert s.median_time_s == pytest.approx(np.median(c["times"]))
        assert s.total_time_s == pytest.approx(np.sum(c["times"]))
        if s.method == "attack":
            assert s.mean_gap_to_attack is None
        else:
            assert s.mean_gap_to_attack == pytest.approx(np.mean(c["gaps"]))
            assert s.mean_gap_to_attack > 0  # every bound in the data lies below the attack margin
    # the fixture really exercises every verdict and the non-finite paths
    verdicts = {r.verdict for r in report.records}
    assert verdicts == set(Verdict)
    assert any(math.isnan(r.bound) for r in report.records) and any(r.bound == -math.inf for r in report.records)


def test_summary_order_and_table(report: Report) -> None:
    summaries = report.summaries()
    keys = [((s.eps), method_rank(s.method)) for s in summaries]
    assert keys == sorted(keys)
    assert [s.method for s in summaries[:5]] == [m for m in METHOD_ORDER if m in METHODS]
    lines = report.table().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["method", "n", "cert"])  # after the headline
    header = lines[start]
    data_rows = [ln for ln in lines[start + 2:] if ln.split() and ln.split()[0] in METHODS]
    assert [ln.split() for ln in data_rows] == [list(summary_row(s)) for s in summaries]
    assert all(len(ln) == len(header) for ln in data_rows)  # right-aligned to the header width
    assert "WARNING" not in report.table()


def test_json_round_trip_and_schema(report: Report, tmp_path) -> None:
    path = tmp_path / "report.json"
    report.to_json(path)
    text = path.read_text(encoding="utf-8")
    obj = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    validate_report_json(obj)
    back = Report.from_json(path)
    assert back == report
    assert [a.to_dict() for a in back.summaries()] == [b.to_dict() for b in report.summaries()]
    assert back.records[0] is not report.records[0] and back.meta == report.meta
    assert obj["meta"]["network"]["hash"] == random_network(1).digest()
    assert set(obj["meta"]["versions"]) >= {"python", "torch", "numpy", "cvxpy", "verify"}
    assert obj["meta"]["options"]["sdp_backend"] == Options().sdp_backend
    assert len(obj["summaries"]) == len(report.summaries())


def _corrupt(obj: dict, how: str) -> dict:
    obj = json.loads(json.dumps(obj))
    if how == "verdict":
        obj["records"][3]["verdict"] = "proved"
    elif how == "no_meta":
        del obj["meta"]
    elif how == "bound_string":
        obj["records"][0]["bound"] = "NaN"
    elif how == "extra_field":
        obj["records"][1]["colour"] = "red"
    elif how == "negative_eps":
        obj["records"][2]["eps"] = -0.1
    elif how == "schema_name":
        obj["schema"] = "something-else"
    return obj


@pytest.mark.parametrize("how", ["verdict", "no_meta", "bound_string", "extra_field", "negative_eps", "schema_name"])
def test_invalid_documents_are_rejected(report: Report, tmp_path, how: str) -> None:
    bad = _corrupt(report.to_json_dict(), how)
    with pytest.raises(ValueError, match="does not match the schema"):
        validate_report_json(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ReportError, match=re.escape(str(path))):
        Report.from_json(path)


def test_schema_file_is_a_valid_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from verify.report import _schema

    jsonschema.Draft202012Validator.check_schema(_schema())


def test_not_json_missing_file_and_duplicates_are_rejected(tmp_path) -> None:
    with pytest.raises(ReportError, match="cannot read report"):
        Report.from_json(tmp_path / "absent.json")
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="not valid JSON"):
        Report.from_json(path)
    rec = Record.from_result(0, 1, 0.1, _result("lp", Verdict.CERTIFIED, 0.5, 1.0, SolverStatus.OPTIMAL))
    with pytest.raises(ReportError, match="duplicate record"):
        Report([rec, rec])


def test_conflicts_are_reported() -> None:
    ok = _result("attack", Verdict.FALSIFIED, -0.2, 0.1, SolverStatus.NOT_APPLICABLE)
    liar = _result("lp", Verdict.CERTIFIED, 0.3, 1.0, SolverStatus.OPTIMAL)
    fine = _result("ibp", Verdict.FALSIFIED, -1.0, 0.01, SolverStatus.NOT_APPLICABLE)
    rep = Report([Record.from_result(5, 1, 0.1, r) for r in (ok, liar, fine)])
    found = {c.kind: set(c.methods) for c in rep.conflicts()}
    assert found == {ConflictKind.CERTIFIED_AND_FALSIFIED: {"lp", "attack", "ibp"},
                     ConflictKind.BOUND_ABOVE_ATTACK: {"attack", "lp"}}
    assert all(c.index == 5 and c.eps == 0.1 for c in rep.conflicts())
    assert "WARNING: input 5" in rep.table()


def test_scatter_pair_choice() -> None:
    assert scatter_pair(["attack", "crown", "lp", "sdp", "exact"]) == ("lp", "sdp")
    assert scatter_pair(["attack", "ibp", "crown", "alpha-crown"]) == ("crown", "alpha-crown")
    assert scatter_pair(["ibp", "crown", "lp"]) == ("crown", "lp")
    assert scatter_pair(["attack", "ibp"]) is None


class _Page(HTMLParser):
    """Collects summary-table rows (cell texts), image sources and every attribute value."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self.attrs: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        a = dict(attrs)
        self.attrs += [v or "" for v in a.values()]
        if tag == "tr" and "summary" in (a.get("class") or "").split():
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):  # noqa: ANN001
        if self._cell is not None:
            self._cell.append(data)


def _check_page(text: str, n_plots: int) -> _Page:
    page = _Page()
    page.feed(text)
    assert len(page.images) == n_plots
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|iframe)\b", text, re.I)
    return page


def test_html_page(report: Report, tmp_path) -> None:
    path = tmp_path / "report.html"
    report.to_html(path)
    text = path.read_text(encoding="utf-8")
    page = _check_page(text, n_plots=3)  # accuracy, sdp-vs-lp scatter, times
    expected = [[fmt_eps(s.eps), *summary_row(s)] for s in report.summaries()]
    assert page.rows == expected
    assert "Bounds: sdp against lp" in text
    assert "solver &lt;warning&gt; &amp; &quot;quote&quot;" in text and "<warning>" not in text
    assert "test &lt;run&gt;" in text and "<run>" not in text
    assert "<details>" in text


def test_html_hostile_text_and_fallback_pair(tmp_path) -> None:
    evil = "<script>alert('x')</script>"
    recs = [Record.from_result(i, 0, 0.02, _result(m, Verdict.UNKNOWN, -0.5 - k, 0.01 * (k + 1),
                                                   SolverStatus.NOT_APPLICABLE, evil))
            for i in range(3) for k, m in enumerate(("crown", "alpha-crown"))]
    rep = Report(recs, {"network": {"name": evil}, "command_line": ["verify", evil]})
    path = tmp_path / "r.html"
    rep.to_html(path)
    text = path.read_text(encoding="utf-8")
    _check_page(text, n_plots=3)  # no attack: still accuracy, crown vs alpha-crown, times
    assert "Bounds: alpha-crown against crown" in text
    assert evil not in text and "&lt;script&gt;" in text


def test_box_properties_and_empty_report(tmp_path) -> None:
    """eps None (VNN-LIB boxes), a single verifier (no scatter), and an empty report still render."""
    recs = [Record.from_result(i, None, None, r) for i in range(4) for r in (
        _result("attack", Verdict.UNKNOWN, 0.5 + i, 0.2, SolverStatus.NOT_APPLICABLE),
        _result("ibp", Verdict.CERTIFIED if i % 2 else Verdict.UNKNOWN, 0.1 if i % 2 else -0.1, 0.001,
                SolverStatus.NOT_APPLICABLE))]
    rep = Report(recs)
    (s_attack, s_ibp) = rep.summaries()
    assert (s_attack.method, s_ibp.method, s_ibp.eps, s_ibp.certified) == ("attack", "ibp", None, 2)
    assert "eps = box" in rep.table()
    rep.to_html(tmp_path / "box.html")
    _check_page((tmp_path / "box.html").read_text(encoding="utf-8"), n_plots=2)  # accuracy and times
    rep.to_json(tmp_path / "box.json")
    assert Report.from_json(tmp_path / "box.json") == rep
    empty = Report([])
    assert empty.summaries() == [] and empty.table().splitlines()[0].startswith("method")
    empty.to_html(tmp_path / "empty.html")
    _check_page((tmp_path / "empty.html").read_text(encoding="utf-8"), n_plots=0)


def test_flat_cli_style_meta_is_accepted(tmp_path) -> None:
    """Metadata written as flat keys (network as a shape string, command as one string) validates and renders."""
    net = random_network(2)
    meta = {"model": "nets/x.onnx", "network": net.describe(), "network_hash": net.digest(), "start": 0,
            "eps": [0.01], "command": "verify nets/x.onnx --eps 0.01", "started": "2026-01-01T00:00:00+00:00",
            "options": Options().with_(time_limit=math.inf)}
    rep = Report(_records(3), meta)
    assert rep.meta["options"]["time_limit"] is None and "versions" in rep.meta  # JSON-safe, filled in
    validate_report_json(rep.to_json_dict())
    rep.to_html(tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "verify report: nets/x.onnx" in text and net.digest() in text and "--eps 0.01" in text
