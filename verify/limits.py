"""Per-task limits on time and memory, enforced the same way in this process, in local worker processes
and in Dask workers.

A task (one input at one eps) runs inside :func:`watch`. A monitor thread checks, every
:data:`POLL_S` seconds, the resident memory of this process and its children (Linux ``/proc``) and the
task's wall time. When a limit is crossed it raises :class:`MemoryLimitExceeded` or :class:`TimeLimitExceeded`
*in the task's thread* (``PyThreadState_SetAsyncExc``): the running method stops at its next Python
instruction and the task records it (ERROR for memory, UNKNOWN/TIME_LIMIT for time) instead of the
whole run stalling or dying. Both derive from ``BaseException`` so that no method's ``except Exception``
swallows them. Where a method is stuck inside one long C call the exception cannot land; in a worker
process (``kill_on_overrun``) the monitor then kills the process after :data:`GRACE_S` seconds, and the
task is retried elsewhere or recorded as ERROR by the pool or cluster that runs it.

The methods' own limits stay the first line: ``Options.time_limit`` (seconds per margin for LP, SDP and
MILP solves) and ``Options.timeout`` (a property's whole wall time, see :mod:`verify.budget`). The hard
time limit here only catches a method that overruns them: :func:`hard_time_limit`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

log = logging.getLogger(__name__)

POLL_S = 0.1
GRACE_S = 30.0
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


class TaskLimitExceeded(BaseException):
    """Raised in a task's thread when it crosses a limit (see the module docstring)."""


class MemoryLimitExceeded(TaskLimitExceeded):
    pass


class TimeLimitExceeded(TaskLimitExceeded):
    pass


@dataclass(frozen=True)
class Limits:
    """Limits of one task.

    Attributes:
        memory_bytes: resident memory of the process running the task, its children included (None: none).
        time_s: hard wall-time limit of one task in seconds (None: none); see :func:`hard_time_limit`.
        kill_on_overrun: kill this process when a limit's exception cannot land within ``GRACE_S``
            (only in worker processes, never in the user's own process).
        max_attempts: a task whose worker process dies this many times is recorded as ERROR.
    """

    memory_bytes: int | None = None
    time_s: float | None = None
    kill_on_overrun: bool = False
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ValueError(f"memory limit must be > 0 bytes, got {self.memory_bytes}")
        if self.time_s is not None and not self.time_s > 0:
            raise ValueError(f"task time limit must be > 0 seconds, got {self.time_s}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")


def hard_time_limit(timeout: float | None) -> float | None:
    """The hard limit of a task whose property has ``Options.timeout`` seconds: 1.25 x timeout + 5 s (None
    without a timeout). Methods share the timeout cooperatively; this only stops one that overruns it."""
    return None if timeout is None else 1.25 * float(timeout) + 5.0


def parse_memory(text: str) -> int:
    """``"4GiB"``, ``"500MB"``, ``"2g"`` or a number of bytes -> bytes. Raises ValueError."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"memory limit must be a size like 4GiB, 500MB or 2g, got {text!r}")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"memory limit must be > 0, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """``3221225472`` -> ``"3.0 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def process_tree_rss(pid: int | None = None) -> int | None:
    """Resident bytes of ``pid`` (default: this process) and all its descendants; None where ``/proc`` is absent."""
    root = os.getpid() if pid is None else pid
    if not os.path.exists(f"/proc/{root}/statm"):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo, seen = 0, [root], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total


@dataclass
class _Watched:
    limits: Limits
    start: float
    raised: str | None = None
    raised_at: float = 0.0


class _Monitor:
    """One daemon thread per process watching every task that runs inside :func:`watch`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: dict[int, _Watched] = {}
        self.thread: threading.Thread | None = None

    def add(self, ident: int, limits: Limits, start: float) -> None:
        with self.lock:
            self.tasks[ident] = _Watched(limits, start)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="verify-limits", daemon=True)
                self.thread.start()

    def remove(self, ident: int) -> None:
        with self.lock:
            w = self.tasks.pop(ident, None)
            if w is not None and w.raised is not None:
                _async_raise(ident, None)  # withdraw an exception that has not landed yet

    def _loop(self) -> None:
        while True:
            time.sleep(POLL_S)
            with self.lock:
                if not self.tasks:
                    continue
                need_rss = any(w.limits.memory_bytes is not None for w in self.tasks.values())
                rss = process_tree_rss() if need_rss else None
                now = time.monotonic()
                for ident, w in self.tasks.items():
                    self._check(ident, w, rss, now)

    def _check(self, ident: int, w: _Watched, rss: int | None, now: float) -> None:
        lim = w.limits
        if w.raised is not None:
            if lim.kill_on_overrun and now - w.raised_at > GRACE_S:
                log.error("a task did not stop %.0f s after %s; killing worker process %d", GRACE_S, w.raised, os.getpid())
                kill_own_group()
            return
        if lim.memory_bytes is not None and rss is not None and rss > lim.memory_bytes:
            w.raised, w.raised_at = f"the memory limit ({format_bytes(rss)} > {format_bytes(lim.memory_bytes)})", now
            _async_raise(ident, MemoryLimitExceeded)
        elif lim.time_s is not None and now - w.start > lim.time_s:
            w.raised, w.raised_at = f"the task time limit of {lim.time_s:g} s", now
            _async_raise(ident, TimeLimitExceeded)


_MONITOR = _Monitor()


def _async_raise(ident: int, exc: type[BaseException] | None) -> None:
    obj = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), obj)


def kill_own_group() -> None:
    """Kill this process and its children (a worker process leads its own process group)."""
    try:
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def watch(limits: Limits, start: float | None = None) -> Iterator[None]:
    """Run the block (part of one task, in the current thread) under ``limits``; the task's time counts
    from ``start`` (``time.monotonic()``, default now). At most one limit exception is raised per block,
    and none after the block is left."""
    if limits.memory_bytes is None and limits.time_s is None:
        yield
        return
    ident = threading.get_ident()
    _MONITOR.add(ident, limits, time.monotonic() if start is None else start)
    try:
        yield
    finally:
        try:
            _MONITOR.remove(ident)
        except TaskLimitExceeded:  # it landed just as the block ended: unregister, then let it propagate
            _MONITOR.remove(ident)
            raise
