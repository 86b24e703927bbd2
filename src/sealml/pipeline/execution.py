"""Running one stage function on serialised inputs: the part every executor shares."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SealmlError, UsageError
from . import codecs
from .capture import captured
from .stage import Stage
from .threads import limit_threads


class StageFailedError(UsageError):
    """The stage function raised, or returned something other than its declared outputs;
    *log* is what it printed and logged before (secrets blanked), kept for its run."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log

    def __reduce__(self) -> tuple[type[StageFailedError], tuple[str, str]]:
        # Keeps the log when the error crosses a process (Ray).
        return type(self), (self.message, self.log)


QUARANTINE = "__quarantine__"
LOG = "__log__"  # what the stage printed and logged, beside its outputs


class Quarantined(Exception):  # noqa: N818 - raised by stage code, reads as a verdict
    """Raised by a stage that refuses its input: the pipeline stops, and the outputs given
    here (the offending data, a report) are sealed and flagged as quarantined so they can
    be inspected but never flow downstream."""

    def __init__(self, reason: str, outputs: Mapping[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outputs = outputs


@dataclass
class StageResult:
    """What a stage function returned: its declared outputs as objects, and the reason
    when it quarantined them."""

    values: dict[str, Any]
    quarantine: str | None = None
    log: str = ""


def execute_stage(
    stage: Stage,
    inputs: Mapping[str, bytes],
    params: Mapping[str, Any],
    threads: int,
    secrets: Mapping[str, Any] | None = None,
    *,
    own_process: bool = False,
) -> dict[str, bytes]:
    """Decode inputs, call the stage, check and encode its outputs. In a process of its
    own (*own_process*), the stage's log takes in what reaches file descriptors 1 and 2."""
    arguments = decode_inputs(stage, inputs)
    result = call_stage(stage, arguments, params, threads, secrets, own_process=own_process)
    return encode_outputs(stage, result)


def decode_inputs(stage: Stage, inputs: Mapping[str, bytes]) -> dict[str, Any]:
    """Stage inputs from their bytes; an unreadable one is a StageFailedError."""
    arguments = {}
    for name, data in inputs.items():
        try:
            arguments[name] = codecs.decode(stage.inputs[name], data)
        except Exception as error:
            message = f"stage {stage.name!r}: input {name!r} cannot be read: {error}"
            raise StageFailedError(message.splitlines()[0]) from None
    return arguments


def call_stage(
    stage: Stage,
    arguments: Mapping[str, Any],
    params: Mapping[str, Any],
    threads: int,
    secrets: Mapping[str, Any] | None = None,
    *,
    own_process: bool = False,
) -> StageResult:
    """Call the stage function and check it returned exactly its declared outputs.

    Native thread pools (OpenMP, BLAS) are set to *threads* on every executor: some models
    record the thread count they were fitted with, and equal inputs must give equal bytes.
    """
    quarantine: str | None = None
    try:
        with limit_threads(threads), captured(descriptors=own_process) as sink:
            result = stage.function(**arguments, **params, **(secrets or {}))
    except Quarantined as verdict:
        result, quarantine = verdict.outputs, verdict.reason
    except SealmlError:
        raise
    except Exception as error:
        message = f"stage {stage.name!r} failed: {type(error).__name__}: {error}"
        raise StageFailedError(message.splitlines()[0], sink.text(_texts(secrets))) from None
    except SystemExit as exit_:  # a stage's sys.exit() ends the stage, not sealml
        raise StageFailedError(
            f"stage {stage.name!r} failed: it called sys.exit({exit_.code!r})",
            sink.text(_texts(secrets)),
        ) from None
    if not isinstance(result, Mapping):
        raise StageFailedError(f"stage {stage.name!r} must return a dict of its outputs")
    missing = set(stage.outputs) - set(result)
    extra = set(result) - set(stage.outputs)
    if missing or extra:
        raise StageFailedError(
            f"stage {stage.name!r} returned outputs {sorted(result)}, "
            f"declared {sorted(stage.outputs)}"
        )
    return StageResult(
        {name: result[name] for name in stage.outputs}, quarantine, sink.text(_texts(secrets))
    )


def _texts(value: Any) -> list[str]:
    """Every string inside *value* (the secrets a stage got: strings, nested in dicts)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [text for inner in value.values() for text in _texts(inner)]
    return []


def private_copy(value: Any) -> Any:
    """A copy of a stage output that a consumer may change freely while the original is
    being serialised: immutable values as they are, DataFrames deep-copied, anything else
    through ``copy.deepcopy``."""
    if isinstance(value, str | bytes):
        return value
    import pandas as pd
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pd.DataFrame):
        return value.copy(deep=True)
    return copy.deepcopy(value)


def encode_outputs(stage: Stage, result: StageResult) -> dict[str, bytes]:
    """The outputs as bytes (plus the quarantine verdict, when there is one)."""
    encoded = {
        name: codecs.encode(kind, result.values[name], f"stage {stage.name!r} output {name!r}")
        for name, kind in stage.outputs.items()
    }
    if result.quarantine is not None:
        encoded[QUARANTINE] = result.quarantine.encode("utf-8")
    if result.log:
        encoded[LOG] = result.log.encode("utf-8")
    return encoded
