"""The HTML report in a real browser: headless Chromium, with every network request refused, renders the page
with the summary first and every plot loaded and visible. Skipped where no Chromium is installed
(Debian: ``apt-get install chromium``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from verify.report import Radius, RadiusKind, Record, Report
from verify.results import SolverStatus, Verdict

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         "--virtual-time-budget=10000", "--window-size=1200,900")

# Runs in the page after load; writes what it saw into <pre id="probe"> for --dump-dom.
PROBE = """<script>
window.addEventListener("load", () => {
  const visible = (el) => {
    for (let e = el; e; e = e.parentElement) {
      if (e.tagName === "DETAILS" && !e.open && !(e.firstElementChild && e.firstElementChild.contains(el))) return false;
      const s = getComputedStyle(e);
      if (s.display === "none" || s.visibility === "hidden" || s.opacity === "0") return false;
    }
    const r = el.getBoundingClientRect();
    return r.width > 100 && r.height > 100;
  };
  const imgs = [...document.images].map((im) => ({alt: im.alt, complete: im.complete, w: im.naturalWidth,
    h: im.naturalHeight, visible: visible(im), top: im.getBoundingClientRect().top + window.scrollY}));
  const head = document.querySelector(".headline");
  const out = {imgs, headlineTop: head ? head.getBoundingClientRect().top + window.scrollY : null,
               headlineVisible: head ? visible(head) : false, title: document.title};
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium installed (Debian: apt-get install chromium); the HTML report is not rendered")


def _report() -> Report:
    rng = np.random.default_rng(0)
    recs, radii = [], []
    for i in range(8):
        att = float(rng.uniform(0.2, 1.0))
        for eps in (0.05, 0.1):
            for m, gap in (("attack", 0.0), ("crown", 0.8), ("lp", 0.6), ("sdp", 0.1)):
                b = att - gap - eps
                verdict = Verdict.CERTIFIED if m != "attack" and b > 0 else Verdict.UNKNOWN
                margins = tuple(float(b + k) for k in range(3))
                recs.append(Record(i, i % 10, eps, m, verdict, b, 0.01 * (1 + gap), SolverStatus.OPTIMAL, "", margins))
        for m, r in (("attack", att), ("crown", att * 0.5), ("lp", att * 0.6), ("sdp", att * 0.95)):
            lo, hi = (r, r + 0.001) if m != "attack" else (r - 0.001, r)
            radii.append(Radius(i, i % 10, m, RadiusKind.BRACKETED, lo, hi, 1.0, 0.001, 5, 0.1, ""))
    return Report(recs, {"options": {"compare": True}, "model": "synthetic <model>"}, radii)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_report_renders_offline_with_every_plot_visible(tmp_path: Path) -> None:
    browser = _browser()
    page = tmp_path / "report.html"
    _report().to_html(page)
    text = page.read_text(encoding="utf-8")
    links = _Links()
    links.feed(text)
    assert links.urls and all(u.startswith("data:image/png;base64,") for u in links.urls)  # nothing to fetch
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    cmd = [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe_page.as_uri()]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("headless Chromium did not finish rendering the report within 120 s")
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no probe output; chromium exit {done.returncode}: {done.stderr[-500:]}"
    seen = json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert seen["title"].startswith("verify report")
    imgs = seen["imgs"]
    assert len(imgs) >= 4  # accuracy against eps, radius scatter, bound scatter, times
    for im in imgs:
        assert im["complete"] and im["w"] > 200 and im["h"] > 200, im
        assert im["visible"], im
    assert seen["headlineVisible"] and seen["headlineTop"] < min(im["top"] for im in imgs)  # summary first
