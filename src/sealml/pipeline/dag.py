"""Pipelines: a DAG of stages, checked before anything runs."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .stage import Stage


@dataclass(frozen=True)
class Source:
    """Data the pipeline starts from, sealed (or found already sealed) before the run.

    *location* is a file (relative to the pipeline file), an ``https://`` URL or a
    SQLAlchemy database URL (with *query*: a table name or a SELECT). Remote locations must
    match ``[data] allowed_sources``. With *sha256* the source is pinned: any change to
    its content stops the run. Where it came from, its SHA-256 and when it was fetched are
    recorded in the signed statement of the sealed source artifact.
    """

    location: str | Path
    kind: str = "file"
    sha256: str | None = None
    query: str | None = None

    def resolved(self, base: Path) -> str | Path:
        """The location, with a relative file path made absolute against *base*."""
        if isinstance(self.location, Path) or "://" not in self.location:
            path = Path(self.location)
            return path if path.is_absolute() else base / path
        return self.location


@dataclass
class Pipeline:
    """Stages wired by name: a stage input named ``x`` reads the output ``x`` of another
    stage, a pipeline source ``x`` (a file sealed at the start of the run) or an existing
    artifact given in *artifacts* (``x`` → id or name)."""

    name: str
    stages: Sequence[Stage]
    params: dict[str, Any] = field(default_factory=dict)
    sources: Mapping[str, Source] = field(default_factory=dict)
    artifacts: Mapping[str, str] = field(default_factory=dict)

    def producers(self) -> dict[str, str]:
        """Output name → the stage that writes it."""
        found: dict[str, str] = {}
        for item in self.stages:
            for output in item.outputs:
                if output in found or output in self.sources or output in self.artifacts:
                    raise UsageError(
                        f"pipeline {self.name!r}: {output!r} is produced more than once "
                        f"(stage {item.name!r})"
                    )
                found[output] = item.name
        return found

    def order(self) -> list[Stage]:
        """Stages in an order that respects every dependency; refuses cycles."""
        by_name: dict[str, Stage] = {}
        for item in self.stages:
            if item.name in by_name:
                raise UsageError(f"pipeline {self.name!r}: two stages are named {item.name!r}")
            by_name[item.name] = item
        producers = self.producers()
        graph = graphlib.TopologicalSorter[str]()
        for item in self.stages:
            graph.add(item.name, *(producers[i] for i in item.inputs if i in producers))
        try:
            return [by_name[n] for n in graph.static_order()]
        except graphlib.CycleError as error:
            cycle = " -> ".join(error.args[1])
            raise UsageError(f"pipeline {self.name!r} has a cycle: {cycle}") from None

    def check(self, param_overrides: Mapping[str, Any] | None = None) -> list[Stage]:
        """Check wiring, types and parameters; returns the stages in run order."""
        ordered = self.order()
        producers = self.producers()
        output_types = {o: t for s in self.stages for o, t in s.outputs.items()}
        for item in ordered:
            for input_name, input_type in item.inputs.items():
                if input_name in producers:
                    produced = output_types[input_name]
                    if produced != input_type:
                        raise UsageError(
                            f"stage {item.name!r}: input {input_name!r} expects a {input_type} "
                            f"but stage {producers[input_name]!r} writes a {produced}"
                        )
                elif input_name in self.sources:
                    if self.sources[input_name].kind != input_type:
                        raise UsageError(
                            f"stage {item.name!r}: input {input_name!r} expects a {input_type} "
                            f"but the source is a {self.sources[input_name].kind}"
                        )
                elif input_name not in self.artifacts:
                    raise UsageError(
                        f"stage {item.name!r}: input {input_name!r} is produced by no stage, "
                        "source or artifact"
                    )
        known = {p for s in self.stages for p in s.parameters}
        for key in {**self.params, **(param_overrides or {})}:
            if key not in known:
                raise UsageError(f"pipeline {self.name!r}: no stage takes a parameter {key!r}")
        for item in ordered:
            values = self.parameters_for(item, param_overrides)
            unset = [k for k, v in values.items() if v is None and item.parameters[k] is None]
            if unset and unset[0] not in {**self.params, **(param_overrides or {})}:
                raise UsageError(f"stage {item.name!r}: parameter {unset[0]!r} has no value")
        return ordered

    def parameters_for(
        self, item: Stage, param_overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The parameters *item* runs with: its defaults, the pipeline's, the overrides."""
        merged = {**self.params, **(param_overrides or {})}
        return {key: merged.get(key, default) for key, default in item.parameters.items()}
