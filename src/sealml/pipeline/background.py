"""Ordered background writers: the runner's sealing happens beside the next stage.

A writer calls methods of one *target* object, one call at a time, in the order they
were made, so a call may use the results of every call before it. After a call fails,
the calls behind it are not run (they depend on it), and the first error is what
:meth:`drain` raises.

* :class:`InlineWriter` calls it at once (no overlap);
* :class:`ThreadWriter` calls the target on a thread of this process;
* :class:`ProcessWriter` calls it in a child interpreter, so serialising, encrypting,
  signing and recording never contend with the stage code for the interpreter lock
  (training libraries release and retake it thousands of times a second: a busy Python
  thread beside them slows them down many times over). Arguments and results cross a
  private pipe between this process and its own child. The child is a fresh interpreter,
  not a fork: a forked copy of a large process makes the parent pay a copy-on-write fault
  for every page it touches afterwards.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, ClassVar, Protocol

from ..errors import SealmlError

_PIPE_BYTES = 1 << 20
_IN_BAND_BYTES = 64 << 10
_READY = -1


class SkippedError(Exception):
    """A call was not run because an earlier one failed."""


class WriterStoppedError(SealmlError):
    """The writer's process ended before answering: what it had not sealed is lost (the
    stage that made it runs again next time)."""


class Writer(Protocol):
    def call(self, method: str, *args: Any) -> Future[Any]: ...

    def borrows(self, call: Future[Any]) -> bool:
        """True while the writer may still read the arguments of *call* (whoever holds
        them must not change them until then)."""
        ...

    def raise_failure(self) -> None: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


class _Failures:
    """The first failure of a writer, and the futures it still owes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first: BaseException | None = None
        self.futures: list[Future[Any]] = []

    def note(self, error: BaseException) -> None:
        with self.lock:
            if self.first is None and not isinstance(error, SkippedError):
                self.first = error

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call *function*, unless an earlier call failed; a failure is noted."""
        if self.first is not None:
            raise SkippedError("an earlier call failed")
        try:
            return function(*args)
        except BaseException as error:
            self.note(error)
            raise

    def raise_first(self) -> None:
        with self.lock:
            first = self.first
        if first is not None:
            raise first

    def drain(self) -> None:
        for future in list(self.futures):
            future.exception()
        self.raise_first()


class _Ordered:
    """What every writer shares: its first failure, raised now or after its calls."""

    def __init__(self) -> None:
        self.failures = _Failures()

    def raise_failure(self) -> None:
        self.failures.raise_first()

    def drain(self) -> None:
        self.failures.drain()


class ThreadWriter(_Ordered):
    """Calls the target's methods on one background thread, in order."""

    def __init__(self, target: object, name: str = "sealml-writer") -> None:
        super().__init__()
        self._target = target
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def call(self, method: str, *args: Any) -> Future[Any]:
        future = self._pool.submit(self.failures.run, getattr(self._target, method), *args)
        self.failures.futures.append(future)
        return future

    def borrows(self, call: Future[Any]) -> bool:
        return not call.done()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class InlineWriter(_Ordered):
    """Calls the target's methods at once, in the caller's thread."""

    def __init__(self, target: object) -> None:
        super().__init__()
        self._target = target

    def call(self, method: str, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(self.failures.run(getattr(self._target, method), *args))
        except BaseException as error:
            future.set_exception(error)
        return future

    def borrows(self, call: Future[Any]) -> bool:
        return False

    def close(self) -> None:
        return None


class ProcessWriter:
    """Calls the methods of a service object in a child process, in order.

    The child is a fresh interpreter (``python -m sealml.pipeline.writer``), started once
    per process and kept for later runs, so its imports are paid once; it builds its
    service with the picklable *factory* and, when *idle*, runs only on processors the
    stage code leaves idle. Each :meth:`open` gives a :class:`Channel` for
    one run; one run uses the child at a time."""

    _shared: ClassVar[dict[tuple[Any, bool], ProcessWriter]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, factory: Callable[[], object], idle: bool = False) -> None:
        calls_read, calls_write = os.pipe()
        replies_read, replies_write = os.pipe()
        command = [
            sys.executable,
            "-m",
            "sealml.pipeline.writer",
            str(calls_read),
            str(replies_write),
        ]
        self._process = subprocess.Popen(
            command,
            pass_fds=(calls_read, replies_write),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C reaches the runner, which decides
        )
        os.close(calls_read)
        os.close(replies_write)
        if idle:  # at once, before the child's imports compete with the stage code
            _run_when_idle(self._process.pid)
        with contextlib.suppress(OSError):  # fewer, larger writes for big stage outputs
            fcntl.fcntl(calls_write, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._calls = Connection(calls_write, readable=False)
        self._replies = Connection(replies_read, writable=False)
        self._lock = threading.Lock()  # one run at a time
        self._ready = threading.Event()
        self._channel: Channel | None = None
        self._numbers = itertools.count()
        self._outbox: queue.SimpleQueue[
            tuple[bytes, list[memoryview], threading.Event | None] | None
        ] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send, name="sealml-writer-calls", daemon=True)
        self._receiver = threading.Thread(
            target=self._receive, name="sealml-writer-replies", daemon=True
        )
        self._sender.start()
        self._receiver.start()
        self._outbox.put((pickle.dumps((factory, idle), protocol=5), [], None))

    @classmethod
    def shared(cls, factory: Callable[[], object], idle: bool = False) -> ProcessWriter:
        """The process's writer for *factory*, started on first use."""
        with cls._shared_lock:
            writer = cls._shared.get((factory, idle))
            if writer is None or not writer.alive:
                writer = cls._shared[(factory, idle)] = cls(factory, idle)
                atexit.register(writer.stop)  # the child finishes what it was given
            return writer

    @classmethod
    def ready(cls, factory: Callable[[], object], idle: bool = False) -> ProcessWriter | None:
        """The process's writer for *factory* if it is running and ready, else None
        (without starting one)."""
        with cls._shared_lock:
            writer = cls._shared.get((factory, idle))
        if writer is None or not writer._ready.is_set() or not writer.alive:
            return None
        return writer

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the child has built its service (or ended); True if ready."""
        return self._ready.wait(timeout) and self.alive

    @property
    def alive(self) -> bool:
        return self._process.poll() is None and self._receiver.is_alive()

    def open(self) -> Channel | None:
        """A channel for one run, once the child is ready (its imports done, so they
        never compete with stage code); None while another run holds the writer or when
        the child could not start."""
        self._ready.wait()
        if not self.alive or not self._lock.acquire(blocking=False):
            return None
        channel = self._channel = Channel(self)
        # Only now the first call: the receiver drops an answer for no current channel,
        # and the child can answer before an assignment that came after the call.
        self._post(channel, "__reset__", ())
        return channel

    def _release(self, channel: Channel) -> None:
        if self._channel is channel:
            self._channel = None
            self._lock.release()

    def _post(
        self, channel: Channel, method: str, args: tuple[Any, ...], detached: bool = False
    ) -> Future[Any]:
        future: Future[Any] = Future()
        number = next(self._numbers)
        if not detached:
            channel.failures.futures.append(future)
        # Large out-of-band buffers (array and table data) are not copied here: the sender
        # thread writes them from the objects themselves, which nobody may change until
        # they are sent (see Channel.borrows). Small ones travel inside the pickle: a
        # model holds hundreds of small arrays, and a write each would make the sender
        # take the interpreter lock from the next stage hundreds of times.
        buffers: list[pickle.PickleBuffer] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            if memoryview(buffer).nbytes < _IN_BAND_BYTES:
                return True
            buffers.append(buffer)
            return False

        try:
            head = pickle.dumps((number, method, args), protocol=5, buffer_callback=out_of_band)
        except Exception as error:  # an argument that cannot cross to the child
            failure = TypeError(f"{method}: {error}".splitlines()[0])
            channel.failures.note(failure)
            future.set_exception(failure)
            return future
        if not detached:
            with channel.failures.lock:
                channel.pending[number] = future
        if not self.alive:
            self._fail_pending(channel)
        sent = threading.Event() if buffers else None
        if sent is not None:
            channel.borrowed[future] = sent
        self._outbox.put((head, [_contiguous(b) for b in buffers], sent))
        return future

    def _send(self) -> None:
        while True:
            message = self._outbox.get()
            if message is None:
                return
            head, buffers, sent = message
            try:
                self._calls.send_bytes(len(buffers).to_bytes(4, "big"))
                self._calls.send_bytes(head)
                for buffer in buffers:
                    self._calls.send_bytes(buffer)
            except (OSError, ValueError):
                return  # the receiver fails what is still pending (and nothing is read)
            finally:
                if sent is not None:
                    sent.set()

    def _receive(self) -> None:
        while True:
            try:
                number, ok, value = self._replies.recv()
            except (EOFError, OSError):
                break
            if number == _READY:
                self._ready.set()
                continue
            channel = self._channel
            if channel is None:
                continue
            with channel.failures.lock:
                future = channel.pending.pop(number, None)
            if future is None:
                continue
            if ok:
                future.set_result(value)
            else:
                channel.failures.note(value)
                future.set_exception(value)
        self._ready.set()  # a child that died starting is not waited for
        if self._channel is not None:
            self._fail_pending(self._channel)

    @staticmethod
    def _fail_pending(channel: Channel) -> None:
        with channel.failures.lock:
            orphans = list(channel.pending.values())
            channel.pending.clear()
        for future in orphans:
            error = WriterStoppedError("the sealing process stopped before finishing")
            channel.failures.note(error)
            if not future.done():
                future.set_exception(error)

    def stop(self) -> None:
        """End the child (it finishes the calls it has)."""
        self._outbox.put(None)
        self._sender.join()
        self._calls.close()
        self._process.wait()
        self._receiver.join()
        self._replies.close()


class Channel(_Ordered):
    """One run's use of a :class:`ProcessWriter`: its calls, its first failure."""

    def __init__(self, writer: ProcessWriter) -> None:
        super().__init__()
        self._writer = writer
        self.pending: dict[int, Future[Any]] = {}
        # calls whose out-of-band buffers (read from the caller's objects) are not yet sent
        self.borrowed: dict[Future[Any], threading.Event] = {}

    def call(self, method: str, *args: Any) -> Future[Any]:
        return self._writer._post(self, method, args)

    def borrows(self, call: Future[Any]) -> bool:
        """The arguments of a call are pickled when it is made, except buffers large
        enough to go out of band, which the sender reads until it has written them."""
        sent = self.borrowed.get(call)
        return sent is not None and not sent.is_set()

    def post(self, method: str, *args: Any) -> None:
        """A call nobody waits for: run in order like the others, its answer dropped
        (for housekeeping after a run's last result, such as closing its workspace)."""
        self._writer._post(self, method, args, detached=True)

    def close(self) -> None:
        """Wait for this run's calls, then free the writer for the next run."""
        for future in list(self.failures.futures):
            future.exception()
        self._writer._release(self)


def serve(calls: Connection, replies: Connection) -> None:
    """The child's loop (see :mod:`sealml.pipeline.writer`): build the service, then
    call, answer, and after a failure refuse the rest of that run; when the parent
    closes the calls pipe, the service's ``close`` (if it has one) ends its work."""
    factory, idle = _receive_call(calls)
    if idle:
        _run_when_idle(0)
    service = factory()
    replies.send((_READY, True, None))
    failures = _Failures()
    while True:
        try:
            number, method, args = _receive_call(calls)
        except EOFError:
            close: Callable[[], None] = getattr(service, "close", lambda: None)
            close()
            break
        if method == "__reset__":  # a new run: earlier failures no longer apply
            failures = _Failures()
            replies.send((number, True, None))
            continue
        try:
            replies.send((number, True, failures.run(getattr(service, method), *args)))
        except BaseException as error:  # every failure goes back to the parent
            replies.send((number, False, _portable(error)))


def _run_when_idle(pid: int) -> None:
    """Let process *pid* (0: this one) take only processor time nobody else wants:
    SCHED_IDLE where Linux offers it (a niced process still takes a share, and a
    parallel region waits for its slowest thread), else the lowest priority."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, 19)


def _contiguous(buffer: pickle.PickleBuffer) -> memoryview:
    try:
        return buffer.raw()
    except BufferError:  # not contiguous: a copy
        return memoryview(bytes(buffer))


def _receive_call(calls: Connection) -> Any:
    """One call as the sender wrote it: a buffer count, the pickle, its buffers."""
    count = int.from_bytes(calls.recv_bytes(), "big")
    head = calls.recv_bytes()
    buffers = [calls.recv_bytes() for _ in range(count)]
    return pickle.loads(head, buffers=buffers)  # noqa: S301 - from our parent, over its pipe


def _portable(error: BaseException) -> BaseException:
    """*error* if it survives pickling; otherwise a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object, in memory
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}".splitlines()[0])
    return error
