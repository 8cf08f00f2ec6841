"""Fault injection for worker tests: a model source whose reference kills, stalls or bloats the worker process.

It lives in its own module so that worker processes (local pool, Dask) can import it by name.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import numpy as np

from verify.worker import FileSource

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "models" / "digits_mlp.pt")
EPS = 0.05


@dataclasses.dataclass(frozen=True)
class FaultySource(FileSource):
    """The digits model, whose reference misbehaves while the attack re-checks points near input ``target``
    (after the other methods of that input are recorded): it kills its process ``crashes`` times in all
    (counted by files in ``marker_dir``), or sleeps ``sleep_s``, or allocates ``alloc_mb``."""

    target: tuple = ()
    marker_dir: str = ""
    crashes: int = 0
    sleep_s: float = 0.0
    alloc_mb: int = 0

    def load(self):  # noqa: ANN201
        loaded = super().load()
        ref, x0 = loaded.reference, np.asarray(self.target)

        def reference(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)
            clean = x.shape[0] == 1 and np.array_equal(x[0], x0)
            if not clean and np.any(np.abs(x - x0).max(axis=1) <= EPS + 1e-9):
                self.misbehave()
            return ref(x)

        return dataclasses.replace(loaded, reference=reference)

    def misbehave(self) -> None:
        if self.crashes and len(os.listdir(self.marker_dir)) < self.crashes:
            Path(self.marker_dir, f"death-{os.getpid()}").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        hold = np.ones(self.alloc_mb * 2**17) if self.alloc_mb else None  # 8 bytes each, pages touched
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.sleep_s:  # short sleeps, so a limit can land in between
            time.sleep(0.01)
        del hold
