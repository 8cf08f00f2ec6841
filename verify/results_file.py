"""Results files: the JSON-lines log of a run, written as it goes, locked while a run writes it.

Format: one ``{"type": "meta", ...}`` line (network hash, options, methods), then one
``{"type": "record", ...}`` line per (input, eps, method), and with ``--radius`` one ``{"type": "radius", ...}``
line per (input, method) (:mod:`verify.radius`; other readers skip them). Lines are appended and the file is flushed
and fsync'ed after every finished input, so a crash loses at most the input in progress.

Safety rules (each one answers a way a run used to lose or duplicate results):

* **Lock.** A run holds an exclusive ``flock`` on its results file from opening to closing; a second
  run on the same file (a second ``--resume``, or the same ``--results``) is refused with
  :class:`ResultsLockedError`, naming the holder (pid, host, start time) from the ``FILE.owner`` note
  the holder writes beside it. The lock dies with its process, so a killed run never leaves the file
  locked. (Without ``fcntl``, e.g. on Windows, there is no lock.)
* **Unique default names.** :func:`create_default` makes ``DIR/<model>-<date>-<time>-<ms>.jsonl`` with
  ``O_EXCL`` and counts up on a clash, so two runs started at the same moment never share a file.
* **Torn last line.** A run killed mid-write can leave a last line without its newline. Reading skips
  it; :meth:`ResultsFile.resume` truncates it before appending (a fragment that is a complete JSON
  line only lost its newline: it is kept, so no complete record is ever dropped).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from pathlib import Path

from verify.report import Record
from verify.report_record import Radius

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """The results file cannot be used (unreadable, not a results file, another network or options)."""


class ResultsLockedError(ResumeError):
    """Another run holds the results file."""


class ResultsExistError(ResumeError):
    """A fresh run was pointed at a results file that already holds results."""


def owner_path(path: Path) -> Path:
    """The note beside a locked results file naming the run that holds it."""
    return path.with_name(path.name + ".owner")


class ResultsFile:
    """An open, locked results file; append records, :meth:`flush` after each input, :meth:`close` at the end.

    Open it with :meth:`create`, :func:`create_default` or :meth:`resume`, never directly.
    """

    def __init__(self, path: Path, fh) -> None:  # noqa: ANN001 - a binary file object
        self.path = Path(path)
        self._fh = fh
        self._owned = False

    # -- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, meta: dict) -> "ResultsFile":
        """A fresh results file at ``path`` (created; an existing empty file is reused) with ``meta`` written.

        Raises :class:`ResultsExistError` if it already holds something, :class:`ResultsLockedError` if
        another run holds it.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rf = cls._open_locked(path, os.O_RDWR | os.O_CREAT)
        if os.fstat(rf._fh.fileno()).st_size:
            rf.close()
            raise ResultsExistError(f"results file {path} exists; pass --resume {path} to continue it, or choose another --results")
        rf._start(meta)
        return rf

    @classmethod
    def resume(cls, path: str | Path) -> tuple["ResultsFile", dict, list[Record]]:
        """Open ``path`` to continue it: ``(file, meta, records)``, the torn last line (if any) repaired.

        Raises :class:`ResumeError` when it is missing or not a results file, :class:`ResultsLockedError`
        when another run holds it.
        """
        path = Path(path)
        if not path.is_file():
            raise ResumeError(f"cannot resume {path}: no such results file")
        rf = cls._open_locked(path, os.O_RDWR)
        try:
            meta, records = parse_results(rf._read_all(), path, repair=rf)
        except BaseException:
            rf.close()
            raise
        rf._fh.seek(0, os.SEEK_END)
        rf._write_owner()
        return rf, meta, records

    @classmethod
    def _open_locked(cls, path: Path, flags: int) -> "ResultsFile":
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as err:
            raise ResumeError(f"cannot open results file {path}: {err.strerror}") from None
        rf = cls(path, os.fdopen(fd, "r+b"))
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                rf._fh.close()
                raise ResultsLockedError(f"results file {path} is in use by another verify run ({describe_owner(path)}); "
                                         "wait for it to finish or choose another --results") from None
        return rf

    def _start(self, meta: dict) -> None:
        self._write_owner()
        self._write({"type": "meta", **meta})
        self.flush()

    def _write_owner(self) -> None:
        note = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now().isoformat(timespec="seconds")}
        try:
            owner_path(self.path).write_text(json.dumps(note) + "\n", encoding="utf-8")
            self._owned = True
        except OSError:  # the note is informative only; the lock itself is the flock
            pass

    def _read_all(self) -> bytes:
        self._fh.seek(0)
        return self._fh.read()

    def truncate_to(self, size: int) -> None:
        """Cut the file at ``size`` bytes (used to drop a torn last line)."""
        self._fh.truncate(size)
        self.flush()

    # -- writing -------------------------------------------------------------------------------
    def _write(self, obj: dict) -> None:
        self._fh.write((json.dumps(obj, allow_nan=False) + "\n").encode("utf-8"))

    def write_raw(self, data: bytes) -> None:
        self._fh.write(data)

    def append(self, record: Record) -> None:
        """Append one record (buffered; call :meth:`flush` when an input is finished)."""
        self._write({"type": "record", **record.to_dict()})

    def append_radius(self, radius: Radius) -> None:
        """Append one certified-radius line (read back by :func:`verify.radius.read_radii`)."""
        self._write({"type": "radius", **radius.to_dict()})

    def flush(self) -> None:
        """Push everything written so far to the disk (flush + fsync)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Flush, drop the owner note, release the lock. Safe to call twice."""
        if self._fh.closed:
            return
        try:
            self.flush()
        finally:
            if self._owned:
                owner_path(self.path).unlink(missing_ok=True)  # before the lock is released: no race
                self._owned = False
            self._fh.close()

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe_owner(path: Path) -> str:
    """``pid 123 on host h since 2024-...`` from the owner note, or a plain phrase when there is none."""
    try:
        note = json.loads(owner_path(path).read_text(encoding="utf-8"))
        return f"pid {note['pid']} on host {note['host']} since {note['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def create_default(runs_dir: str | Path, stem: str, meta: dict) -> ResultsFile:
    """A fresh results file ``runs_dir/<stem>-<YYYYmmdd-HHMMSS-mmm>.jsonl`` that no other run has (O_EXCL)."""
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now()
    base = f"{stem}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"
    for n in range(1, 10_000):
        path = runs / (f"{base}.jsonl" if n == 1 else f"{base}-{n}.jsonl")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        return ResultsFile.create(path, meta)
    raise ResumeError(f"cannot find a free results file name in {runs}")  # pragma: no cover


def read_results(path: str | Path) -> tuple[dict, list[Record]]:
    """Meta and records of a results file (read only; a torn last line is skipped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ResumeError(f"cannot read results file {path}: {err.strerror}") from None
    return parse_results(data, Path(path))


def parse_results(data: bytes, path: Path, repair: ResultsFile | None = None) -> tuple[dict, list[Record]]:
    """Meta and records from a results file's bytes. The part after the last newline is a torn line:
    skipped, or with ``repair`` cut off the file (or given its newline, if it is a complete JSON line).
    A record seen twice (a file written before locking existed) is kept once."""
    end = data.rfind(b"\n") + 1
    body, tail = data[:end], data[end:]
    tail_obj = _complete_json(tail)
    if tail_obj is not None:
        body, tail = data + b"\n", b""
        if repair is not None:
            repair._fh.seek(0, os.SEEK_END)
            repair.write_raw(b"\n")
            repair.flush()
    elif tail:
        log.warning("%s: dropping a partly written last line (%d bytes; a run was killed while writing it)", path, len(tail))
        if repair is not None:
            repair.truncate_to(end)
    return _parse_lines(body, path)


def _complete_json(tail: bytes) -> dict | None:
    if not tail.strip():
        return None
    try:
        obj = json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) and obj.get("type") in ("meta", "record", "radius") else None


def _parse_lines(body: bytes, path: Path) -> tuple[dict, list[Record]]:
    meta: dict = {}
    records: dict[tuple, Record] = {}
    for n, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ResumeError(f"{path} line {n} is not valid JSON; is this a verify results file?") from None
        kind = obj.pop("type", None) if isinstance(obj, dict) else None
        if kind == "meta":
            meta = obj
        elif kind == "record":
            try:
                rec = Record.from_dict(obj)
            except ValueError as err:
                raise ResumeError(f"{path} line {n}: {err}") from None
            if rec.key in records:
                log.warning("%s line %d repeats input %d, eps %s, %s; keeping the first", path, n, rec.index, rec.eps, rec.method)
                continue
            records[rec.key] = rec
    if not meta:
        raise ResumeError(f"{path} has no complete meta line; is this a verify results file?")
    return meta, list(records.values())
