"""Verify each thing once per operation.

One public operation (registering a model, writing its card, checking its gates) walks
the same provenance chain and opens the same attestations several times over, each time
decrypting and checking signatures. Inside an operation marked :func:`verifies_once`, a
verified result is remembered for the rest of that operation and no longer: the next
operation verifies everything afresh, so a byte changed on disk between two operations
is still found. Failures are never remembered. The memory lives in a context variable,
so threads and concurrent tasks never share it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

_VERIFIED: ContextVar[dict[tuple[int, str, Hashable], Any] | None] = ContextVar(
    "sealml_verified", default=None
)


@contextlib.contextmanager
def one_operation() -> Iterator[None]:
    """Treat the calls inside the block as one operation: what one of them verified, the
    next does not verify again. For a caller that reads a report and acts on it at once
    (show the gates, then promote); a block already inside an operation joins it."""
    if _VERIFIED.get() is not None:
        yield
        return
    token = _VERIFIED.set({})
    try:
        yield
    finally:
        _VERIFIED.reset(token)


def verifies_once(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Mark a public operation: what it verifies is verified once while it runs (an
    operation called inside another shares the outer one's memory)."""

    @functools.wraps(method)
    def operation(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with one_operation():
            return method(self, *args, **kwargs)

    return operation


def once(owner: object, kind: str, key: Hashable, verify: Callable[[], R]) -> R:
    """``verify()``, or what it returned earlier in this operation for the same *owner*
    (a workspace), *kind* and *key*; outside an operation, always ``verify()``."""
    memory = _VERIFIED.get()
    if memory is None:
        return verify()
    slot = (id(owner), kind, key)
    if slot not in memory:
        memory[slot] = verify()
    return cast(R, memory[slot])
