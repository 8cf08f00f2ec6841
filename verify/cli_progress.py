"""A one-line progress bar on stderr with running counts (no dependency)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Iterable

from verify.report import Record
from verify.results import Verdict


class Progress:
    """Shows ``[done/total] elapsed | method certified/falsified ...`` after every finished record."""

    def __init__(self, total: int, methods: Iterable[str], enabled: bool = True, prior: Iterable[Record] = ()) -> None:
        self.total = total
        self.methods = tuple(methods)
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.counts: dict[str, Counter] = {m: Counter() for m in self.methods}
        self.tasks: dict[tuple[int, float | None], int] = {}
        self._last = 0.0
        for rec in prior:
            self._count(rec)

    def _count(self, rec: Record) -> None:
        self.counts.setdefault(rec.method, Counter())[rec.verdict] += 1
        key = (rec.index, rec.eps)
        self.tasks[key] = self.tasks.get(key, 0) + 1

    def done(self) -> int:
        return sum(1 for n in self.tasks.values() if n >= len(self.methods))

    def line(self) -> str:
        parts = [f"[{self.done()}/{self.total}] {time.perf_counter() - self.start:6.1f}s"]
        for m in self.methods:
            c = self.counts.get(m, Counter())
            parts.append(f"{m} {c[Verdict.CERTIFIED]}ok/{c[Verdict.FALSIFIED]}cex")
        return " | ".join(parts)

    def update(self, rec: Record) -> None:
        self._count(rec)
        if not self.enabled:
            return
        now = time.perf_counter()
        finished = self.tasks[(rec.index, rec.eps)] >= len(self.methods)
        if self.tty:
            sys.stderr.write("\r" + self.line()[:200] + "\033[K")
            sys.stderr.flush()
        elif finished and now - self._last > 5.0:  # logs: a line every few seconds at most
            self._last = now
            print(self.line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
