"""Native thread pool limits (OpenMP, BLAS) around each stage, through threadpoolctl.

Finding the loaded thread pools means walking every shared library of the process (a few
milliseconds with scikit-learn, pandas and pyarrow loaded), and a pipeline limits them once
per stage. The controller threadpoolctl builds is kept and reused until the process loads or
unloads a shared library: on glibc the dynamic loader counts both (``dlpi_adds`` and
``dlpi_subs`` of ``dl_iterate_phdr``), read in microseconds. Where those counters are not
available the controller is rebuilt every time, as ``threadpool_limits`` does.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from threadpoolctl import ThreadpoolController


class _PhdrInfo(ctypes.Structure):
    """The head of glibc's ``struct dl_phdr_info`` (fields up to the load counters)."""

    _fields_ = (
        ("dlpi_addr", ctypes.c_void_p),
        ("dlpi_name", ctypes.c_char_p),
        ("dlpi_phdr", ctypes.c_void_p),
        ("dlpi_phnum", ctypes.c_uint16),
        ("dlpi_adds", ctypes.c_ulonglong),
        ("dlpi_subs", ctypes.c_ulonglong),
    )


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(_PhdrInfo), ctypes.c_size_t, ctypes.c_void_p
)


class _LoadCounter:
    """How many shared libraries this process has loaded and unloaded so far, or None
    where the loader does not say."""

    def __init__(self) -> None:
        self._seen: tuple[int, int] | None = None
        self._callback = _Callback(self._first)
        try:
            self._iterate: Any = ctypes.CDLL(None).dl_iterate_phdr
        except (OSError, AttributeError):
            self._iterate = None

    def _first(self, info: Any, size: int, _data: Any) -> int:
        if size >= ctypes.sizeof(_PhdrInfo):
            self._seen = (info.contents.dlpi_adds, info.contents.dlpi_subs)
        return 1  # the counters are the same in every entry: stop at the first

    def read(self) -> tuple[int, int] | None:
        if self._iterate is None:
            return None
        self._seen = None
        self._iterate(self._callback, None)
        return self._seen


_lock = threading.Lock()
_counter: _LoadCounter | None = None
_cached: tuple[tuple[int, int], ThreadpoolController] | None = None


def _controller() -> ThreadpoolController:
    global _counter, _cached
    with _lock:
        if _counter is None:
            _counter = _LoadCounter()
        loads = _counter.read()
        if loads is None:
            return ThreadpoolController()
        if _cached is None or _cached[0] != loads:
            controller = ThreadpoolController()
            # read again: building it may have loaded a library
            _cached = (_counter.read() or loads, controller)
        return _cached[1]


@contextmanager
def limit_threads(threads: int) -> Iterator[None]:
    """Limit every native thread pool of the process to *threads* inside the block,
    restoring the earlier limits after it."""
    with _controller().limit(limits=threads):
        yield
