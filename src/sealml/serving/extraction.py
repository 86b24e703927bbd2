"""Spotting model extraction (OWASP ML05) from one principal's query pattern.

Over each principal's last *window* instances three shares are kept, each against a level
ordinary traffic stays far below:

* ``boundary``: the top two class probabilities within 0.1 of each other (probing near the
  decision boundary);
* ``sweep``: an input more than 2.5 standard deviations from the training mean (covering
  the input space rather than the data's region of it);
* ``line-search``: an instance that differs from the principal's previous one in exactly
  one input (walking one feature at a time).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SIGNALS = ("boundary", "sweep", "line-search")
LEVEL = 0.5
_BOUNDARY_GAP = 0.1
_SWEEP_Z = 2.5
_MAX_PRINCIPALS = 10_000


@dataclass(frozen=True)
class ExtractionAlert:
    principal: str
    signal: str
    share: float
    window: int


@dataclass
class _History:
    flags: deque[tuple[bool, bool, bool]]
    sums: list[int] = field(default_factory=lambda: [0, 0, 0])
    previous: Any = None
    alerted: bool = False


class ExtractionDetector:
    """Keeps each principal's recent query pattern; :meth:`observe` returns an alert the
    first time a share crosses its level (then stays quiet for that principal until
    :meth:`clear`)."""

    def __init__(self, window: int = 200) -> None:
        self.window = window
        self._minimum = max(window // 2, 10)
        self._histories: OrderedDict[str, _History] = OrderedDict()

    def observe(
        self, principal: str, rows: Any, ood: Any, probabilities: Any | None
    ) -> ExtractionAlert | None:
        """Record a batch: *rows* (2-D array of inputs, any dtype), *ood* (z-scores) and
        *probabilities* (n x classes, or None for models without them)."""
        history = self._histories.get(principal)
        if history is None:
            history = _History(deque(maxlen=self.window))
            self._histories[principal] = history
            if len(self._histories) > _MAX_PRINCIPALS:
                self._histories.popitem(last=False)
        else:
            self._histories.move_to_end(principal)
        near = np.zeros(len(rows), dtype=bool)
        if probabilities is not None and probabilities.shape[1] >= 2:
            top = np.sort(probabilities, axis=1)[:, -2:]
            near = (top[:, 1] - top[:, 0]) < _BOUNDARY_GAP
        far = np.asarray(ood) > _SWEEP_Z
        for index in range(len(rows)):
            row = rows[index]
            step = False
            if history.previous is not None and len(history.previous) == len(row):
                step = int(sum(a != b for a, b in zip(history.previous, row, strict=True))) == 1
            history.previous = row
            flags = (bool(near[index]), bool(far[index]), step)
            if len(history.flags) == history.flags.maxlen:
                oldest = history.flags[0]
                for i in range(3):
                    history.sums[i] -= oldest[i]
            history.flags.append(flags)
            for i in range(3):
                history.sums[i] += flags[i]
        if history.alerted or len(history.flags) < self._minimum:
            return None
        for signal, total in zip(SIGNALS, history.sums, strict=True):
            share = total / len(history.flags)
            if share > LEVEL:
                history.alerted = True
                return ExtractionAlert(principal, signal, round(share, 3), len(history.flags))
        return None

    def clear(self, principal: str) -> None:
        self._histories.pop(principal, None)
