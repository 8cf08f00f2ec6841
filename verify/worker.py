"""What runs in a worker process (local pool or Dask worker): how it gets the network, and one batch of tasks.

A worker gets the network from a :class:`ModelSource`, loads it once and keeps it (per process, by key):

* :class:`FileSource` (the CLI): the model file's path and the loader's arguments. Every worker loads the
  file itself, so it must be readable at the same path on every worker; the loaded network's hash is
  compared with the client's (:class:`WorkerError` if the file differs).
* :class:`ModuleSource` (the library's ``verify.verify(model, ...)``): a float64 copy of the torch
  module, sent to the workers (the Dask path scatters it once to every worker).

Workers refuse to run for a client whose ``verify`` code differs from theirs (:func:`code_version`).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from verify.load.base import LoadedModel
from verify.limits import Limits
from verify.options import Options
from verify.report import Record

_CACHE_SIZE = 2  # networks kept per worker process
_lock = threading.Lock()
_loaded: dict[str, LoadedModel] = {}
_threads_set: list[int] = []


class WorkerError(ValueError):
    """A worker cannot run this client's tasks (other verify version, other network file, load failure)."""


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


def code_version() -> str:
    """``"<verify version>+<hash of its source files>"``: equal only for the same code."""
    from verify import __version__

    return f"{__version__}+{_source_digest()}"


@dataclass(frozen=True)
class ModelSource:
    """How a worker gets the network; ``digest`` is the client's :meth:`Network.digest` of it."""

    digest: str

    @property
    def key(self) -> str:
        """Identifies the loaded network in a worker's cache."""
        return f"{type(self).__module__}.{type(self).__qualname__}:{self.digest}"

    def load(self) -> LoadedModel:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class FileSource(ModelSource):
    """A model file every worker reads at ``path``, loaded with ``verify.load_model(path, **kwargs)``."""

    path: str = ""
    kwargs: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return repr(self)

    def load(self) -> LoadedModel:
        from verify.load import load_model

        return load_model(self.path, **self.kwargs)

    def describe(self) -> str:
        return f"model file {self.path}"


@dataclass(frozen=True)
class ModuleSource(ModelSource):
    """A torch module (float64, eval mode, on the CPU) converted by ``verify.load.from_module``."""

    module: Any = None
    input_shape: tuple[int, ...] = ()
    domain: tuple = (0.0, 1.0)

    def load(self) -> LoadedModel:
        from verify.load import from_module

        return from_module(self.module, self.input_shape, domain=self.domain)

    def describe(self) -> str:
        return f"torch module {type(self.module).__name__}"


def set_threads(threads: int) -> None:
    """Limit this process to ``threads`` BLAS/OpenMP/torch threads (once per process)."""
    if _threads_set == [threads]:
        return
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    torch.set_num_threads(threads)
    _threads_set[:] = [threads]


MIN_TRIM_BYTES = 32 * 2**20  # glibc's largest dynamic mmap threshold on 64-bit


@functools.lru_cache(maxsize=1)
def relax_malloc_trim() -> bool:
    """Undo a tiny ``MALLOC_TRIM_THRESHOLD_`` in this process (glibc only, once); True if it was changed.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. That also freezes glibc's mmap
    threshold, so every array of the SDP's size is mmap-ed, page-faulted and unmapped again: measured on
    rsl18 pgd_nn, each task took 1.6x longer in a Dask worker than in a plain process, half of it system
    time. Raising both thresholds back to 32 MiB gives the plain process's task times.
    """
    import ctypes
    import os

    try:
        if int(os.environ.get("MALLOC_TRIM_THRESHOLD_", MIN_TRIM_BYTES)) >= MIN_TRIM_BYTES:
            return False
        libc = ctypes.CDLL("libc.so.6")
    except (ValueError, OSError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(libc.mallopt(m_trim_threshold, MIN_TRIM_BYTES)) and bool(libc.mallopt(m_mmap_threshold, MIN_TRIM_BYTES))


def load_source(source: ModelSource) -> LoadedModel:
    """The network of ``source``, loaded once per process; :class:`WorkerError` if it is not the client's."""
    with _lock:
        hit = _loaded.get(source.key)
        if hit is not None:
            return hit
        try:
            loaded = source.load()
        except Exception as err:  # noqa: BLE001 - any load failure is reported as one line
            raise WorkerError(f"a worker could not load the {source.describe()}: {err}") from None
        if loaded.network.digest() != source.digest:
            raise WorkerError(f"a worker loaded a different network from the {source.describe()} (hash "
                              f"{loaded.network.digest()}, the client's is {source.digest}): every worker needs the same file")
        while len(_loaded) >= _CACHE_SIZE:
            _loaded.pop(next(iter(_loaded)))
        _loaded[source.key] = loaded
        return loaded


def check_version(client_version: str) -> None:
    """Raise :class:`WorkerError` naming both versions when this worker's code is not the client's."""
    ours = code_version()
    if ours != client_version:
        raise WorkerError(f"a worker runs verify {ours} but the client runs verify {client_version}: install the same "
                          "verify version on every worker")


@dataclass(frozen=True)
class Batch:
    """What every task of a run shares; sent once to each local worker, with each chunk to Dask workers."""

    source: ModelSource
    methods: tuple[str, ...]
    options: Options
    limits: Limits
    threads: int
    client_version: str

    @staticmethod
    def of(source: ModelSource, methods: tuple[str, ...], options: Options, limits: Limits, threads: int) -> "Batch":
        """The batch a client sends: this client's version, limits that may kill a stuck worker process."""
        return Batch(source, tuple(methods), options, replace(limits, kill_on_overrun=True), threads, code_version())

    def prepare(self) -> LoadedModel:
        """Check the version, set the threads, load the network (all idempotent per process)."""
        check_version(self.client_version)
        set_threads(self.threads)
        relax_malloc_trim()
        return load_source(self.source)


def run_jobs(batch: Batch, jobs: Sequence[tuple[Any, frozenset[str]]], emit: Callable[[Record], None] | None = None,
             job_done: Callable[[float], None] | None = None) -> tuple[list[Record], list[float]]:
    """Run ``jobs`` (``(task, methods already done)``) of ``batch``; returns the records and each job's seconds.

    ``emit`` is called with each record as it is made and ``job_done`` with each job's seconds (the local
    pool streams both to the client).
    """
    from verify.runner import evaluate_limited

    loaded = batch.prepare()
    records: list[Record] = []
    seconds: list[float] = []
    for task, skip in jobs:
        t0 = time.perf_counter()
        for rec in evaluate_limited(loaded.network, task, batch.methods, batch.options, loaded.reference, skip, batch.limits):
            records.append(rec)
            if emit is not None:
                emit(rec)
        seconds.append(time.perf_counter() - t0)
        if job_done is not None:
            job_done(seconds[-1])
    return records, seconds
