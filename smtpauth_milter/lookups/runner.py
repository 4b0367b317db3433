"""A bounded pool of worker threads that runs slow lookups for threads that may only wait.

A caller (a libmilter thread) hands in a key and a function and waits for the
answer at most ``deadline`` seconds.  The pool never grows: a full queue is an
immediate :class:`LookupFailed` ("overloaded"), so a hung map or DNS server
costs a bounded number of threads and every caller a bounded wait.  Callers
asking for a key that is already being looked up wait for the same answer
instead of queueing a second lookup.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal, TypeVar, cast

T = TypeVar("T")
# A waiting (libmilter) thread allows this much on top of a lookup's own time limit.
DEADLINE_MARGIN = 0.5
Reason = Literal["timeout", "overloaded", "error"]


class LookupFailed(Exception):
    """No answer: the lookup raised, took longer than its deadline, or the pool was full."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason
        self.detail = detail


_Job = tuple[Hashable, Callable[[], Any], "Future[Any]"]


class LookupRunner:
    """``workers`` threads (started on first use) behind a queue of ``queue_size`` jobs."""

    def __init__(self, name: str, workers: int = 4, queue_size: int = 64) -> None:
        self.name = name
        self._workers = workers
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._in_flight: dict[Hashable, Future[Any]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._deferred: list[Callable[[], Any]] = []  # posted while the queue was full

    def run(self, key: Hashable, fn: Callable[[], T], deadline: float) -> T:
        """``fn()``'s answer, computed on a worker; :class:`LookupFailed` when there is none."""
        future = self._submit(key, fn)
        try:
            return cast(T, future.result(timeout=deadline))
        except FutureTimeout:
            raise LookupFailed("timeout", f"{self.name}: no answer within {deadline:g} s") from None
        except LookupFailed:
            raise
        except Exception as exc:  # the lookup's own failure, whatever its kind
            raise LookupFailed("error", f"{self.name}: {exc}") from exc

    def _submit(self, key: Hashable, fn: Callable[[], Any]) -> Future[Any]:
        with self._lock:
            running = self._in_flight.get(key)
            if running is not None:
                return running
            self._start_workers()
            future: Future[Any] = Future()
            try:
                self._jobs.put_nowait((key, fn, future))
            except queue.Full:
                raise LookupFailed(
                    "overloaded", f"{self.name}: {self._jobs.maxsize} lookups already waiting"
                ) from None
            self._in_flight[key] = future
            return future

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on a worker, without waiting and without ever blocking: when the
        queue is full, it runs after the next job a worker finishes."""
        with self._lock:
            self._start_workers()
            try:
                self._jobs.put_nowait((object(), fn, Future()))
            except queue.Full:
                self._deferred.append(fn)

    def _start_workers(self) -> None:
        """Threads start on first use, so a process that forks before any lookup is safe."""
        if self._threads:
            return
        for number in range(self._workers):
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-lookup-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            key, fn, future = job
            _settle(future, fn)
            with self._lock:
                self._in_flight.pop(key, None)
                deferred, self._deferred = self._deferred, []
            for later in deferred:  # nobody waits for these: a posted job reports its trouble
                _settle(Future(), later)

    def stop(self) -> None:
        """Let the workers finish their current lookup and end (best effort, no wait)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                break


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to every waiter, never lost
        future.set_exception(exc)
