"""The bounded inference queue: a fixed pool of worker threads with admission control.

The engine is CPU-bound, so it never runs on the event loop. A request is *admitted* only while fewer than
``workers + queue_size`` requests are admitted; otherwise :class:`QueueFull` is raised at once (HTTP 503 with a
``Retry-After`` estimated from recent run times), so load never piles up unboundedly and never becomes a 500.

A request that passes its deadline gets :class:`RequestTimeout` (HTTP 504). Python cannot kill a thread: the task
is cancelled if it has not started, and otherwise told to stop through a :class:`threading.Event` that the task
checks (the service checks it between engine tiles through the progress callback). Its admission slot is released
only when the thread really finishes, so the bound counts what is actually running.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["InferencePool", "QueueFull", "RequestTimeout", "Cancelled"]


class QueueFull(Exception):
    """Every worker is busy and the queue is full; retry after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int, capacity: int) -> None:
        self.retry_after_s = retry_after_s
        self.capacity = capacity
        super().__init__(f"the inference queue is full ({capacity} requests admitted); retry in {retry_after_s} s")


class RequestTimeout(Exception):
    """The request did not finish within its deadline (waiting in the queue included)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"the request did not finish within {timeout_s:g} s (queue wait included)")


class Cancelled(Exception):
    """Raised inside a task whose request timed out or whose service is shutting down."""


class InferencePool:
    """``workers`` threads; at most ``workers + queue_size`` tasks admitted at a time."""

    def __init__(self, workers: int, queue_size: int, *, name: str = "rscore-infer") -> None:
        self.workers = workers
        self.queue_size = queue_size
        self.capacity = workers + queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._completed = 0
        self._rejected = 0
        self._mean_s: float | None = None  # exponentially weighted mean run time of finished tasks, seconds
        self._closing = threading.Event()
        self._live: set[threading.Event] = set()  # cancel events of admitted tasks

    # ------------------------------------------------------------------------------------------------ admission
    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: mean run time x queue depth / workers, at least 1."""
        with self._lock:
            mean = self._mean_s if self._mean_s is not None else 1.0
            depth = max(1, self._admitted - self.workers + 1)
        return int(min(3600, max(1, math.ceil(mean * depth / self.workers))))

    @property
    def full(self) -> bool:
        """``True`` when a new task would be refused now (a hint: :meth:`submit` decides)."""
        return self._admitted >= self.capacity or self._closing.is_set()

    def refuse(self) -> QueueFull:
        """Count a refusal made before :meth:`submit` (e.g. before reading a request body) and return the error."""
        with self._lock:
            self._rejected += 1
        return QueueFull(self.retry_after_s(), self.capacity)

    def submit(self, fn: Callable[[threading.Event], T]) -> tuple[Future[T], threading.Event]:
        """Admit ``fn(cancel_event)`` or raise :class:`QueueFull`; returns its future and its cancel event."""
        if self._closing.is_set():
            raise QueueFull(self.retry_after_s(), self.capacity)
        with self._lock:
            if self._admitted >= self.capacity:
                self._rejected += 1
                full = True
            else:
                self._admitted += 1
                full = False
        if full:
            raise QueueFull(self.retry_after_s(), self.capacity)
        cancel = threading.Event()
        with self._lock:
            self._live.add(cancel)

        def task() -> T:
            with self._lock:
                self._running += 1
            t0 = time.perf_counter()
            try:
                if cancel.is_set() or self._closing.is_set():
                    raise Cancelled("cancelled before it started")
                return fn(cancel)
            finally:
                elapsed = time.perf_counter() - t0
                with self._lock:
                    self._running -= 1
                    self._completed += 1
                    self._mean_s = elapsed if self._mean_s is None else 0.8 * self._mean_s + 0.2 * elapsed

        def release(_future: Future[Any] | None = None) -> None:
            with self._lock:
                self._admitted -= 1
                self._live.discard(cancel)

        try:
            future = self._executor.submit(task)
        except RuntimeError:  # executor shut down between the check and now
            release()
            raise QueueFull(self.retry_after_s(), self.capacity) from None
        future.add_done_callback(release)
        return future, cancel

    async def run(self, fn: Callable[[threading.Event], T], timeout_s: float) -> T:
        """Run ``fn`` in the pool and await it for at most ``timeout_s`` seconds (queue wait included)."""
        future, cancel = self.submit(fn)
        waiter = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except asyncio.TimeoutError:
            cancel.set()
            future.cancel()
            raise RequestTimeout(timeout_s) from None
        except asyncio.CancelledError:  # the client went away or the server is stopping
            cancel.set()
            future.cancel()
            raise

    # ---------------------------------------------------------------------------------------------------- state
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "workers": self.workers,
                "queue_size": self.queue_size,
                "running": self._running,
                "waiting": max(0, self._admitted - self._running),
                "completed": self._completed,
                "rejected": self._rejected,
                "mean_run_s": None if self._mean_s is None else round(self._mean_s, 4),
            }

    def close(self, wait: bool = True) -> None:
        """Refuse new work, drop queued tasks, and (``wait``) wait for running ones."""
        self._closing.set()
        with self._lock:
            for event in self._live:
                event.set()
        self._executor.shutdown(wait=wait, cancel_futures=True)
