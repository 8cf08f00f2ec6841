"""``--workers N``: tasks run in N local worker processes; records stream back to the client's sink.

Each worker is a fresh process (forked from a clean fork server, see :func:`_context`) in its own process group, limited to ``threads``
BLAS/torch threads, that loads the network once (:mod:`verify.worker`) and then runs chunks of tasks
(:mod:`verify.chunks`), sending every record as it is made. Only the client writes the results file.

Faults: when a worker dies (killed, out of memory, a crash in native code) the records it sent are
kept, the task it was running goes back to the queue and a new worker takes its place; a task whose
workers die ``Limits.max_attempts`` times is recorded as ERROR with the reason. Workers ignore Ctrl-C
(the client stops them) and kill themselves if the client process disappears.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from verify.chunks import Chunker
from verify.limits import Limits, kill_own_group
from verify.options import Options
from verify.runner import Sink, Task, failed_records
from verify.worker import Batch, ModelSource, WorkerError, run_jobs

log = logging.getLogger(__name__)

SETUP_FAILURES = 3  # workers dying before they are ready, in a row, before the run gives up


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_options(options: Options, workers: int, cores: int | None = None) -> Options:
    """``options`` for each of ``workers`` processes: ``sdp_workers`` is cut so that workers x SDP processes
    stays within the cores (at least 1: with as many workers as cores, each solves its margins in turn)."""
    cores = available_cores() if cores is None else cores
    per_worker = max(1, cores // max(1, workers))
    return options if options.sdp_workers <= per_worker else options.with_(sdp_workers=per_worker)


def describe_exit(code: int | None) -> str:
    """A worker's exit code in words."""
    if code is None:
        return "it stopped answering"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (out of memory, or killed)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


@dataclass
class _Slot:
    """One worker process and the chunk it is running."""

    proc: multiprocessing.process.BaseProcess
    conn: object
    ready: bool = False
    jobs: list[Task] = field(default_factory=list)
    pos: int = 0  # index in ``jobs`` of the task running now


class LocalPool:
    """Executor running tasks in ``workers`` local processes (see the module docstring)."""

    def __init__(self, source: ModelSource, workers: int, limits: Limits = Limits(), threads: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.source, self.workers, self.limits, self.threads = source, workers, limits, threads

    def run(self, tasks: list[Task], methods: tuple[str, ...], options: Options, sink: Sink) -> None:
        todo = sink.unfinished(tasks, methods)
        if not todo:
            return
        batch = Batch.of(self.source, methods, worker_options(options, self.workers), self.limits, self.threads)
        run = _Run(batch, sink, Chunker(todo, self.workers), _context())
        try:
            run.loop(min(self.workers, len(todo)))
        finally:
            run.stop()


def _context():  # noqa: ANN202
    """Fork workers from a fork server that imported verify and torch once but never ran them (cheap to start,
    safe: no thread pools or ONNX sessions are inherited); spawn where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["verify.pool"])
    return ctx


class _Run:
    def __init__(self, batch: Batch, sink: Sink, chunker: Chunker[Task], ctx) -> None:  # noqa: ANN001
        self.batch, self.sink, self.chunker, self.ctx = batch, sink, chunker, ctx
        self.slots: list[_Slot] = []
        self.deaths: dict[tuple, int] = {}
        self.setup_failures = 0
        self.finished = False

    def loop(self, n: int) -> None:
        self.slots = [self._spawn() for _ in range(n)]
        while len(self.chunker) or any(s.jobs for s in self.slots):
            for s in self.slots:
                if s.ready and not s.jobs and len(self.chunker):
                    self._dispatch(s)
            ready = set(wait([s.conn for s in self.slots] + [s.proc.sentinel for s in self.slots], timeout=1.0))
            alive = []
            for s in self.slots:
                if s.conn in ready or s.proc.sentinel in ready:
                    self._drain(s)
                if s.proc.is_alive():
                    alive.append(s)
                else:
                    alive += self._replace(s)
            self.slots = alive
        self.finished = True

    def _spawn(self) -> _Slot:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker_main, args=(child, self.batch, os.getpid()), name="verify-worker")
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def _dispatch(self, s: _Slot) -> None:
        s.jobs, s.pos = self.chunker.take(), 0
        try:
            s.conn.send([(t, self.sink.finished(t)) for t in s.jobs])
        except OSError:
            pass  # the worker died; handled with its exit

    def _drain(self, s: _Slot) -> None:
        while True:
            try:
                if not s.conn.poll():
                    return
                kind, value = s.conn.recv()
            except (EOFError, OSError):
                return
            except Exception:  # noqa: BLE001 - a message cut short by the worker's death
                log.debug("unreadable message from worker %s", s.proc.pid, exc_info=True)
                return
            if kind == "record":
                self.sink.add(value)
            elif kind == "job_done":
                self.sink.task_done()
                self.chunker.observe([value])
                s.pos += 1
            elif kind == "chunk_done":
                s.jobs, s.pos = [], 0
            elif kind == "ready":
                s.ready = True
                self.setup_failures = 0
            elif kind == "setup_error":
                raise WorkerError(value)

    def _replace(self, s: _Slot) -> list[_Slot]:
        """A dead worker's running task is retried (or recorded as ERROR after too many deaths); a new worker
        starts if there is work left for it."""
        s.proc.join()
        reason = describe_exit(s.proc.exitcode)
        if not s.ready:
            self.setup_failures += 1
            if self.setup_failures >= SETUP_FAILURES:
                raise WorkerError(f"worker processes die while starting ({reason})")
        elif s.jobs:
            current, rest = s.jobs[s.pos], s.jobs[s.pos + 1:]
            key = (current.index, current.eps)
            self.deaths[key] = self.deaths.get(key, 0) + 1
            log.warning("worker %d died running input %d, eps %g: %s", s.proc.pid, current.index, current.eps, reason)
            if self.deaths[key] >= self.batch.limits.max_attempts:
                msg = f"its worker process died {self.deaths[key]} times running this input (last: {reason})"
                for rec in failed_records(current, self.batch.methods, self.sink.finished(current), msg):
                    self.sink.add(rec)
                self.sink.task_done()
                self.chunker.put_back(rest)
            else:
                self.chunker.put_back([current, *rest])
        _close(s)
        return [self._spawn()] if len(self.chunker) else []

    def stop(self) -> None:
        """Stop every worker: politely after a finished run, at once otherwise (their partial work is not needed)."""
        for s in self.slots:
            if self.finished and s.proc.is_alive():
                try:
                    s.conn.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + (5.0 if self.finished else 0.0)
        for s in self.slots:
            s.proc.join(max(0.0, deadline - time.monotonic()))
            if s.proc.is_alive():
                _kill_group(s.proc.pid)
                s.proc.join(5.0)
            _close(s)


def _close(s: _Slot) -> None:
    try:
        s.conn.close()
    except OSError:
        pass


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
            return
        except OSError:
            continue


def _watch_client(client: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(client, 0)
        except ProcessLookupError:
            kill_own_group()
        except OSError:
            pass


def worker_main(conn, batch: Batch, client: int) -> None:  # noqa: ANN001
    """A worker process: load the network, then run the chunks the client sends until it sends None."""
    try:
        os.setpgid(0, 0)  # own group: the terminal's Ctrl-C goes to the client only, and kills reach SDP children
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_client, args=(client,), daemon=True, name="verify-client-watch").start()
    try:
        batch.prepare()
    except Exception as err:  # noqa: BLE001 - reported to the client as one line
        conn.send(("setup_error", str(err) if isinstance(err, WorkerError) else f"a worker failed to start: {type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            jobs = conn.recv()
        except (EOFError, OSError):
            return
        if jobs is None:
            return
        run_jobs(batch, jobs, emit=lambda rec: conn.send(("record", rec)), job_done=lambda sec: conn.send(("job_done", sec)))
        conn.send(("chunk_done", None))
