"""The sealing process's writer: calls in order, and what it still reads of the caller's
objects (large buffers go out of band and are read until sent; small ones are copied into
the call at once)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sealml.pipeline.background import ProcessWriter


class Service:
    """A service for the child: a slow call, and one that receives an array."""

    def pause(self, seconds: float) -> str:
        time.sleep(seconds)
        return "paused"

    def size(self, array: np.ndarray) -> int:
        return int(array.nbytes)


def _eventually(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_large_argument_is_borrowed_until_sent_and_a_small_one_never() -> None:
    writer = ProcessWriter(Service)
    try:
        assert writer.wait_ready(120)
        channel = writer.open()
        assert channel is not None
        slow = channel.call("pause", 1.0)
        # Larger than the pipe: the sender cannot finish while the child sleeps.
        large = np.ones(8 << 20, dtype=np.uint8)
        call = channel.call("size", large)
        assert channel.borrows(call)
        assert call.result(60) == large.nbytes
        assert slow.result() == "paused"
        assert _eventually(lambda: not channel.borrows(call))
        small = channel.call("size", np.ones(100))
        assert not channel.borrows(small)
        assert small.result(60) == 800
        channel.close()
    finally:
        writer.stop()


class AnswersBeforeReturning(ProcessWriter):
    """A writer whose calls return only after the child has answered them: what a busy
    machine does when the caller's thread loses the processor right after sending."""

    def _post(
        self, channel: Any, method: str, args: tuple[Any, ...], detached: bool = False
    ) -> Any:
        future = super()._post(channel, method, args, detached)
        time.sleep(0.3)
        return future


def test_an_answer_that_comes_back_at_once_reaches_its_run() -> None:
    """A channel is the writer's current one before its first call goes out; an answer
    for no current channel would be dropped and the run would wait for it forever."""
    writer = AnswersBeforeReturning(Service)
    try:
        assert writer.wait_ready(120)
        for _ in range(3):
            channel = writer.open()
            assert channel is not None
            opening = channel.failures.futures[0]  # the reset that starts the run
            assert opening.result(10) is None
            assert channel.call("pause", 0).result(10) == "paused"
            channel.close()
    finally:
        writer.stop()
