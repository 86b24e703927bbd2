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


def execute_stage(
    stage: Stage, inputs: Mapping[str, bytes], params: Mapping[str, Any], threads: int
) -> dict[str, bytes]:
    """Decode inputs, call the stage, check and encode its outputs.

    Native thread pools (OpenMP, BLAS) are set to *threads* on every executor: some models
    record the thread count they were fitted with, and equal inputs must give equal bytes.
    """
    with threadpool_limits(limits=threads):
        return _execute(stage, inputs, params)


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
    try:
        result = stage.function(**arguments, **params)
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
    return {
        name: codecs.encode(kind, result[name], f"stage {stage.name!r} output {name!r}")
        for name, kind in stage.outputs.items()
    }
