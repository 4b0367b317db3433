"""A bounded pool of worker threads that runs slow lookups for threads that may only wait.

A caller (a libmilter thread) hands in a key and a function and waits for the
answer at most ``deadline`` seconds.  The queue never grows: a full queue is an
immediate :class:`LookupFailed` ("overloaded"), so a hung map or DNS server
costs a bounded number of threads and every caller a bounded wait.  Callers
asking for a key that is already being looked up wait for the same answer
instead of queueing a second lookup, but only while it may still answer: a
lookup that failed or ran past its caller's deadline is never joined again.

A worker still busy with a lookup whose deadline has passed is abandoned: a
new worker takes its place at once, so stuck lookups never shrink the pool,
and the abandoned thread ends when its lookup does.  At most
:data:`MAX_ABANDONED` threads per pool are abandoned at a time (a bound on
threads should every lookup hang for ever); past that a stuck worker is
waited for.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Literal, TypeVar, cast

T = TypeVar("T")
# A waiting (libmilter) thread allows this much on top of a lookup's own time limit.
DEADLINE_MARGIN = 0.5
MAX_ABANDONED = 16
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
        self._running: dict[Future[Any], threading.Thread] = {}  # job -> its worker
        self._abandoned: set[threading.Thread] = set()
        self._number = 0  # for thread names
        self._deferred: list[Callable[[], Any]] = []  # posted while the queue was full

    def run(self, key: Hashable, fn: Callable[[], T], deadline: float) -> T:
        """``fn()``'s answer, computed on a worker; :class:`LookupFailed` when there is none."""
        future = self._submit(key, fn)
        try:
            return cast(T, future.result(timeout=deadline))
        except (FutureTimeout, CancelledError):
            self._overran(key, future)
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

    def _overran(self, key: Hashable, future: Future[Any]) -> None:
        """``future`` gave no answer in time: later callers ask afresh; a queued job is
        dropped, a running one's worker abandoned and replaced."""
        with self._lock:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]
            if future.cancel():  # still queued: no worker will run it
                return
            worker = self._running.get(future)
            if worker is None or worker in self._abandoned or worker not in self._threads:
                return
            if len(self._abandoned) >= MAX_ABANDONED:
                return
            self._abandoned.add(worker)
            self._threads.remove(worker)
            self._start_worker()

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on a worker, without waiting and without ever blocking: when the
        queue is full, it runs after the next job a worker finishes."""
        with self._lock:
            self._start_workers()
            try:
                self._jobs.put_nowait((object(), fn, Future()))
            except queue.Full:
                self._deferred.append(fn)

    def workers(self) -> int:
        """Workers that can take a job now or soon: not counting abandoned ones."""
        with self._lock:
            return len(self._threads)

    def _start_workers(self) -> None:
        """Threads start on first use, so a process that forks before any lookup is safe."""
        if self._threads:
            return
        for _ in range(self._workers):
            self._start_worker()

    def _start_worker(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self.name}-lookup-{self._number}", daemon=True
        )
        self._number += 1
        thread.start()
        self._threads.append(thread)

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            key, fn, future = job
            with self._lock:  # before it runs: a caller giving up finds whose job it is
                self._running[future] = me
            if not future.set_running_or_notify_cancel():
                with self._lock:  # its caller gave up while it waited in the queue
                    del self._running[future]
                continue
            _settle(future, fn, functools.partial(self._done, key, future))
            with self._lock:
                del self._running[future]
                deferred, self._deferred = self._deferred, []
                if me in self._abandoned:  # replaced while it was stuck: end here
                    self._abandoned.discard(me)
                    self._jobs_for_later(deferred)
                    return
            for later in deferred:  # nobody waits for these: a posted job reports its trouble
                _settle(Future(), later, lambda: None)

    def _done(self, key: Hashable, future: Future[Any]) -> None:
        """Before a job's answer is handed out: nobody may join it any more."""
        with self._lock:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]

    def _jobs_for_later(self, deferred: list[Callable[[], Any]]) -> None:
        self._deferred[:0] = deferred  # an abandoned worker leaves them to the others

    def stop(self) -> None:
        """Let the workers finish their current lookup and end (best effort, no wait)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                break


def _settle(future: Future[Any], fn: Callable[[], Any], before: Callable[[], None]) -> None:
    """Run ``fn`` and hand its answer or exception to every waiter, never lost;
    ``before`` runs between the two."""
    try:
        value = fn()
    except BaseException as exc:
        before()
        future.set_exception(exc)
        return
    before()
    future.set_result(value)
