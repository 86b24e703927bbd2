"""Stages: Python functions with declared, typed inputs and outputs.

>>> @stage(inputs={"raw": "dataset"}, outputs={"train": "dataset", "test": "dataset"})
... def split(raw, test_size=0.2, seed=0):
...     ...
...     return {"train": train, "test": test}

Inputs are named after the outputs (or pipeline inputs) they consume; the remaining keyword
parameters are the stage's parameters, taken from the pipeline and the command line.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from .codecs import TYPES

DEFAULT_PERMISSION = "pipeline:run"
# Secret name → the keyword argument that carries it into the stage function.
SECRETS = {"pii": "pii_keys", "watermark": "watermark_key"}


@dataclass(frozen=True)
class StageLimits:
    """What a stage may use when it runs in a process of its own: wall-clock seconds
    (``sandbox`` and ``ray`` executors stop it after them) and address space in MiB
    (``sandbox`` only: its allocations beyond it fail with MemoryError)."""

    seconds: float | None = None
    memory_mib: int | None = None

    def __post_init__(self) -> None:
        if self.seconds is not None and not 0 < self.seconds <= 7 * 24 * 3600:
            raise UsageError("a stage's time limit is between 0 and 7 days, in seconds")
        if self.memory_mib is not None and not 64 <= self.memory_mib <= 1 << 24:
            raise UsageError("a stage's memory limit is between 64 MiB and 16 TiB, in MiB")

    def __or__(self, defaults: StageLimits) -> StageLimits:
        """These limits, each unset one taken from *defaults*."""
        return StageLimits(
            self.seconds if self.seconds is not None else defaults.seconds,
            self.memory_mib if self.memory_mib is not None else defaults.memory_mib,
        )


@dataclass(frozen=True)
class Stage:
    """A pipeline step: what it reads, what it writes, what it needs to run."""

    name: str
    function: Callable[..., Mapping[str, Any]]
    inputs: dict[str, str]
    outputs: dict[str, str]
    parameters: dict[str, Any] = field(default_factory=dict)
    permission: str = DEFAULT_PERMISSION
    isolated: bool = False
    secrets: tuple[str, ...] = ()
    limits: StageLimits = StageLimits()

    def __call__(self, *args: Any, **kwargs: Any) -> Mapping[str, Any]:
        return self.function(*args, **kwargs)


def _check_types(where: str, declared: Mapping[str, str]) -> dict[str, str]:
    for name, kind in declared.items():
        if kind not in TYPES:
            raise UsageError(
                f"{where} {name!r} has unknown type {kind!r}; use one of {', '.join(TYPES)}"
            )
    return dict(declared)


def stage(
    *,
    outputs: Mapping[str, str],
    inputs: Mapping[str, str] | None = None,
    name: str | None = None,
    permission: str = DEFAULT_PERMISSION,
    isolated: bool = False,
    secrets: tuple[str, ...] = (),
    time_limit_seconds: float | None = None,
    memory_limit_mib: int | None = None,
) -> Callable[[Callable[..., Mapping[str, Any]]], Stage]:
    """Declare a function as a stage with typed inputs and outputs.

    Types: ``dataset`` (pandas DataFrame or Arrow table, stored as Parquet), ``model``
    (scikit-learn estimator, stored with skops), ``report`` (JSON-able dict) and ``file``
    (bytes). *permission* is what the acting principal needs; an *isolated* stage is
    refused by the sandbox executor when no sandbox is available. *secrets* names workspace
    secrets the stage receives as keyword arguments at run time, never recorded in
    parameters, provenance or cache keys: ``"pii"`` gives ``pii_keys`` (the keys behind
    pseudonyms and tokens, as hex). *time_limit_seconds* and *memory_limit_mib* bound the
    stage where it runs in a process of its own (see :class:`StageLimits`); an executor that
    cannot enforce a declared limit refuses to run the pipeline.
    """
    limits = StageLimits(time_limit_seconds, memory_limit_mib)

    def wrap(function: Callable[..., Mapping[str, Any]]) -> Stage:
        stage_name = name or function.__name__
        declared_inputs = _check_types(f"stage {stage_name!r} input", inputs or {})
        declared_outputs = _check_types(f"stage {stage_name!r} output", outputs)
        if not declared_outputs:
            raise UsageError(f"stage {stage_name!r} declares no outputs")
        parameters: dict[str, Any] = {}
        signature = inspect.signature(function)
        unknown = [s for s in secrets if s not in SECRETS]
        if unknown:
            raise UsageError(f"stage {stage_name!r}: unknown secret {unknown[0]!r}")
        hidden = {SECRETS[s] for s in secrets}
        for parameter in signature.parameters.values():
            if parameter.name in declared_inputs or parameter.name in hidden:
                continue
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise UsageError(f"stage {stage_name!r}: *args and **kwargs are not supported")
            parameters[parameter.name] = (
                None if parameter.default is inspect.Parameter.empty else parameter.default
            )
        missing = [n for n in declared_inputs if n not in signature.parameters]
        if missing:
            raise UsageError(f"stage {stage_name!r} declares input {missing[0]!r} it does not take")
        return Stage(
            name=stage_name,
            function=function,
            inputs=declared_inputs,
            outputs=declared_outputs,
            parameters=parameters,
            permission=permission,
            isolated=isolated,
            secrets=tuple(secrets),
            limits=limits,
        )

    return wrap


def declare(
    function: Any,
    name: str,
    inputs: dict[str, str],
    outputs: dict[str, str],
    secrets: tuple[str, ...] = (),
) -> Stage:
    """A stage from a function that takes its inputs (and secrets) as keyword arguments:
    how the built-in stage factories make stages at run time."""
    import inspect

    names = [*inputs, *(SECRETS[s] for s in secrets)]
    parameters = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    function.__signature__ = inspect.Signature(parameters)
    function.__name__ = name
    return stage(inputs=inputs, outputs=outputs, name=name, secrets=secrets)(function)
