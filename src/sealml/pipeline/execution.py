"""Running one stage function on serialised inputs: the part every executor shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from threadpoolctl import threadpool_limits

from ..errors import SealmlError, UsageError
from . import codecs
from .stage import Stage


class StageFailedError(UsageError):
    """The stage function raised, or returned something other than its declared outputs."""


QUARANTINE = "__quarantine__"


class Quarantined(Exception):  # noqa: N818 - raised by stage code, reads as a verdict
    """Raised by a stage that refuses its input: the pipeline stops, and the outputs given
    here (the offending data, a report) are sealed and flagged as quarantined so they can
    be inspected but never flow downstream."""

    def __init__(self, reason: str, outputs: Mapping[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outputs = outputs


def execute_stage(
    stage: Stage,
    inputs: Mapping[str, bytes],
    params: Mapping[str, Any],
    threads: int,
    secrets: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """Decode inputs, call the stage, check and encode its outputs.

    Native thread pools (OpenMP, BLAS) are set to *threads* on every executor: some models
    record the thread count they were fitted with, and equal inputs must give equal bytes.
    """
    with threadpool_limits(limits=threads):
        return _execute(stage, inputs, {**params, **(secrets or {})})


def _execute(
    stage: Stage, inputs: Mapping[str, bytes], params: Mapping[str, Any]
) -> dict[str, bytes]:
    arguments = {}
    for name, data in inputs.items():
        try:
            arguments[name] = codecs.decode(stage.inputs[name], data)
        except Exception as error:
            message = f"stage {stage.name!r}: input {name!r} cannot be read: {error}"
            raise StageFailedError(message.splitlines()[0]) from None
    quarantine: str | None = None
    try:
        result = stage.function(**arguments, **params)
    except Quarantined as verdict:
        result, quarantine = verdict.outputs, verdict.reason
    except SealmlError:
        raise
    except Exception as error:
        message = f"stage {stage.name!r} failed: {type(error).__name__}: {error}"
        raise StageFailedError(message.splitlines()[0]) from None
    if not isinstance(result, Mapping):
        raise StageFailedError(f"stage {stage.name!r} must return a dict of its outputs")
    missing = set(stage.outputs) - set(result)
    extra = set(result) - set(stage.outputs)
    if missing or extra:
        raise StageFailedError(
            f"stage {stage.name!r} returned outputs {sorted(result)}, "
            f"declared {sorted(stage.outputs)}"
        )
    encoded = {
        name: codecs.encode(kind, result[name], f"stage {stage.name!r} output {name!r}")
        for name, kind in stage.outputs.items()
    }
    if quarantine is not None:
        encoded[QUARANTINE] = quarantine.encode("utf-8")
    return encoded
