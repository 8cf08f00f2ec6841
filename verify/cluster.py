"""``--cluster ADDRESS`` and ``verify.verify(..., client=)``: tasks on an existing Dask distributed cluster.

Needs ``pip install "verify[cluster]"`` (Dask's ``distributed``); nothing else in verify imports it.

Tasks travel in chunks (:mod:`verify.chunks`) as ``(task, methods already done)`` lists; each worker
loads the network once from the run's :class:`verify.worker.ModelSource` (the CLI's: the model file's
path, read by every worker; the library's: a module scattered to every worker) and returns the chunk's
records, which the client appends to the results file as each chunk completes, so ``--resume``
continues local and cluster runs alike. Faults are Dask's: a chunk whose worker dies is rescheduled on
another worker; one that killed ``distributed.scheduler.allowed-failures`` + 1 workers is split into
single tasks, and a single task that does it is recorded as ERROR with the reason. The client never
shuts the cluster down.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Any

from verify.chunks import Chunker
from verify.limits import Limits
from verify.options import Options
from verify.runner import Sink, Task, failed_records
from verify.worker import Batch, ModelSource, ModuleSource, WorkerError, code_version, run_jobs

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
WAIT_FOR_WORKERS_S = 60.0
IN_FLIGHT_PER_SLOT = 2


class ClusterError(ValueError):
    """The cluster cannot be used (unreachable, no workers, Dask missing); one line."""


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` for a scheduler ``address`` (``tcp://host:8786``, ``host:8786``) or a
    scheduler file (``.json``, as written by ``dask scheduler --scheduler-file``). Raises :class:`ClusterError`."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--cluster needs Dask's distributed package: pip install 'verify[cluster]'") from None
    if address.endswith(".json"):
        if not Path(address).is_file():
            raise ClusterError(f"scheduler file {address} does not exist")
        kwargs: dict[str, Any] = {"scheduler_file": address}
    else:
        _probe(address, timeout)
        kwargs = {"address": address}
    try:
        return Client(**kwargs, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {' '.join(str(err).split())}") from None


def _probe(address: str, timeout: float) -> None:
    """Fail fast, in one line, on a TCP address that refuses or does not resolve (Dask would retry until its timeout)."""
    m = re.fullmatch(r"(?:tcp://)?\[?([^\[\]/]+?)\]?:(\d+)/?", address.strip())
    if m is None:
        if "://" in address:
            return  # tls://, ucx://, inproc://: left to Dask
        raise ClusterError(f"--cluster {address!r}: expected a scheduler address like tcp://host:8786, or a scheduler file .json")
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as err:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {err.strerror or err}") from None


def check_workers(client: Any, wait_s: float = WAIT_FOR_WORKERS_S) -> int:
    """The number of worker threads, after checking that every worker runs this client's verify code."""
    if not client.nthreads():
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            raise ClusterError(f"the Dask scheduler at {client.scheduler.address} has no workers (waited {wait_s:g} s)") from None
    ours = code_version()
    try:
        versions = client.run(code_version)
    except Exception as err:  # noqa: BLE001 - typically: verify is not installed on the workers
        raise WorkerError(f"the Dask workers cannot run verify ({type(err).__name__}: {err}); install verify {ours} on "
                          "every worker") from None
    for addr, theirs in versions.items():
        if theirs != ours:
            raise WorkerError(f"Dask worker {addr} runs verify {theirs} but this client runs verify {ours}: install the "
                              "same verify version on every worker")
    return sum(client.nthreads().values())


class DaskExecutor:
    """Executor sending chunks of tasks to a Dask cluster through ``client`` (see the module docstring).

    Each worker thread runs one task at a time with ``threads`` BLAS/torch threads; the SDP's own
    ``sdp_workers`` is 1 there (Dask's worker processes may not start processes of their own).
    """

    def __init__(self, client: Any, source: ModelSource, limits: Limits = Limits(), threads: int = 1) -> None:
        self.client, self.source, self.limits, self.threads = client, source, limits, threads

    def run(self, tasks: list[Task], methods: tuple[str, ...], options: Options, sink: Sink) -> None:
        from distributed import as_completed

        todo = sink.unfinished(tasks, methods)
        if not todo:
            return
        slots = check_workers(self.client)
        batch = Batch.of(self.source, methods, options.with_(sdp_workers=1), self.limits, self.threads)
        ref = self.client.scatter(batch, broadcast=True, hash=False) if isinstance(self.source, ModuleSource) else batch
        chunker: Chunker[Task] = Chunker(todo, slots, target_s=1.0)
        done = as_completed(loop=self.client.loop)
        inflight: dict[Any, list[Task]] = {}

        def submit(jobs: list[Task]) -> None:
            fut = self.client.submit(run_jobs, ref, [(t, sink.finished(t)) for t in jobs], pure=False)
            inflight[fut] = jobs
            done.add(fut)

        def fill() -> None:
            while len(inflight) < IN_FLIGHT_PER_SLOT * slots and len(chunker):
                submit(chunker.take())

        try:
            fill()
            for fut in done:
                jobs = inflight.pop(fut)
                if fut.status == "finished":
                    records, seconds = fut.result()
                    fut.release()  # else a worker's death would make Dask recompute a chunk we already have
                    for rec in records:
                        sink.add(rec)
                    sink.task_done()
                    chunker.observe(seconds)
                else:
                    self._failed(fut, jobs, methods, sink, submit)
                    fut.release()
                fill()
        finally:
            if inflight:
                self.client.cancel(list(inflight))
            if ref is not batch:
                ref.release()

    def _failed(self, fut: Any, jobs: list[Task], methods: tuple[str, ...], sink: Sink, submit) -> None:  # noqa: ANN001
        from distributed import KilledWorker

        try:
            exc = fut.exception()
        except Exception as err:  # noqa: BLE001 - a cancelled future (the scheduler restarted, the client closed)
            exc = err
        if isinstance(exc, WorkerError):
            raise WorkerError(str(exc))
        if not isinstance(exc, KilledWorker):
            raise ClusterError(f"a verify task failed on the cluster: {type(exc).__name__}: {' '.join(str(exc).split())}")
        if len(jobs) > 1:  # find the culprit: each task of the chunk on its own
            for t in jobs:
                submit([t])
            return
        task = jobs[0]
        last = getattr(getattr(exc, "last_worker", None), "address", "?")
        msg = (f"its Dask workers died {exc.allowed_failures + 1} times running this input (out of memory, or a crash; "
               f"the last was {last})")
        log.warning("input %d, eps %g: %s", task.index, task.eps, msg)
        for rec in failed_records(task, methods, sink.finished(task), msg):
            sink.add(rec)
        sink.task_done()
