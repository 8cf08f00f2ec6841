"""Wall-time budgets: a property's ``Options.timeout`` shared by the methods that run on it.

A :class:`Budget` is started when a property starts; each method is given what is left
(:meth:`Budget.options_for`), and a method that loops (solves margin after margin, splits domains)
checks :meth:`Budget.expired` or caps each solve with :meth:`Budget.limit`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from verify.options import Options


@dataclass(frozen=True)
class Budget:
    """A deadline on ``time.monotonic()``'s clock; ``None`` means no deadline."""

    deadline: float | None

    @staticmethod
    def start(timeout: float | None) -> "Budget":
        """A budget of ``timeout`` seconds from now (None: unlimited)."""
        return Budget(None if timeout is None else time.monotonic() + float(timeout))

    def remaining(self) -> float:
        """Seconds left (``inf`` without a deadline, never below 0)."""
        return math.inf if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def limit(self, seconds: float) -> float:
        """``seconds`` capped by what is left (at least a millisecond, so solvers accept it)."""
        return max(1e-3, min(float(seconds), self.remaining()))

    def options_for(self, options: Options) -> Options:
        """``options`` for the next method: ``timeout`` and ``time_limit`` capped by what is left."""
        if self.deadline is None:
            return options
        left = max(1e-3, self.remaining())
        return options.with_(timeout=left, time_limit=min(options.time_limit, left))
