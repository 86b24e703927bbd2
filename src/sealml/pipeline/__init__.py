"""Pipelines: stages with typed inputs and outputs, wired into a checked DAG."""

from .dag import Pipeline, Source
from .execution import Quarantined
from .stage import Stage, stage

__all__ = ["Pipeline", "Quarantined", "Source", "Stage", "stage"]
