"""An ordered background writer: the runner's sealing happens beside the next stage.

Jobs run one at a time on one thread, in the order they were submitted, so a job may use
the results of every job before it. After a job fails, the jobs behind it are not run
(they depend on it) and the first error is what :meth:`OrderedWriter.drain` raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SkippedError(Exception):
    """A job was not run because an earlier one failed."""


class OrderedWriter:
    """Runs submitted jobs in order on one background thread."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._futures: list[Future[object]] = []
        self._failure: BaseException | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], T]) -> Future[T]:
        """Queue *job*; its future holds its result or its error."""

        def guarded() -> T:
            with self._lock:
                if self._failure is not None:
                    raise SkippedError("an earlier job failed")
            try:
                return job()
            except BaseException as error:
                with self._lock:
                    if self._failure is None:
                        self._failure = error
                raise

        future = self._pool.submit(guarded)
        self._futures.append(future)  # type: ignore[arg-type]
        return future

    def raise_failure(self) -> None:
        """Raise the first error of a finished job, if any, without waiting."""
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure

    def drain(self) -> None:
        """Wait for every queued job; raise the first error."""
        for future in list(self._futures):
            future.exception()
        self.raise_failure()

    def close(self) -> None:
        """Wait for queued jobs (their errors are for :meth:`drain`) and stop the thread."""
        self._pool.shutdown(wait=True)
