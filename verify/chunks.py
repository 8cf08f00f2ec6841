"""Chunks of tasks for workers: single tasks until their cost is known, then batches of about ``target_s``.

Cheap tasks (CROWN on a small network: milliseconds) cost more to ship than to run, so they travel in
batches; expensive ones (an SDP: seconds) travel alone, so that every worker keeps busy to the end and a
worker that dies loses little.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Iterable, Sequence, TypeVar

T = TypeVar("T")


class Chunker(Generic[T]):
    """A queue of tasks handed out in chunks sized from the mean task time observed so far.

    ``slots`` is the number of tasks that can run at once; a chunk never holds more than half of one
    slot's share of the queue (rounded up), so the end of a run is still spread over every slot.
    """

    def __init__(self, tasks: Iterable[T], slots: int, target_s: float = 0.5) -> None:
        self.queue: deque[T] = deque(tasks)
        self.slots = max(1, int(slots))
        self.target_s = target_s
        self.n_seen = 0
        self.total_s = 0.0

    def __len__(self) -> int:
        return len(self.queue)

    def size(self) -> int:
        """How many tasks the next chunk gets."""
        if self.n_seen == 0:
            return 1
        by_time = int(self.target_s / max(self.total_s / self.n_seen, 1e-6))
        by_balance = -(-len(self.queue) // (2 * self.slots))  # ceil
        return max(1, min(by_time, by_balance))

    def take(self) -> list[T]:
        """The next chunk (empty when the queue is)."""
        return [self.queue.popleft() for _ in range(min(self.size(), len(self.queue)))]

    def observe(self, seconds: Sequence[float]) -> None:
        """Seconds that finished tasks took."""
        self.n_seen += len(seconds)
        self.total_s += float(sum(seconds))

    def put_back(self, tasks: Sequence[T]) -> None:
        """Return ``tasks`` to the front of the queue, in their order (a dead worker's chunk)."""
        self.queue.extendleft(reversed(list(tasks)))
