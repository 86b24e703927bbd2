"""Spotting model extraction (OWASP ML05) from one principal's query pattern.

Over each principal's last *window* instances, three signals:

* ``sweep``: the queries are not distributed like the training data. Each input's values
  are binned (numeric inputs by the training deciles, categories by their training
  shares) and a chi-square test compares the window with training; an attacker covering
  the input space crowds the outer bins. The level is a tail probability of 1e-6 per
  input, so ordinary traffic does not trip it.
* ``boundary``: most queries sit where the top two class probabilities are within 0.1
  (probing the decision boundary).
* ``line-search``: most queries differ from the principal's previous one in exactly one
  input (walking one feature at a time).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ..data.profile import Profile

SIGNALS = ("sweep", "boundary", "line-search")
SHARE_LEVEL = 0.5
SWEEP_TAIL = 1e-6
_BOUNDARY_GAP = 0.1
_RARE = 0.02
_MAX_PRINCIPALS = 10_000


@dataclass(frozen=True)
class ExtractionAlert:
    principal: str
    signal: str
    score: float
    window: int


@dataclass(frozen=True)
class _Binning:
    """How one input is binned, and the share of training data in each bin."""

    name: str
    edges: Any | None  # numeric: decile edges; None for categories
    codes: dict[str, int]  # categories: category -> bin (rare ones share the last bin)
    expected: Any
    critical: float

    def bins(self, column: pd.Series) -> Any:
        if self.edges is not None:
            values = column.to_numpy(dtype="float64", na_value=np.nan)
            return np.searchsorted(self.edges, values, side="right")
        other = len(self.expected) - 1
        return np.array([self.codes.get(str(v), other) for v in column], dtype=np.int64)


def _binnings(profile: Profile | None) -> list[_Binning]:
    found = []
    for feature in profile.features if profile else ():
        if feature.kind in ("integer", "number") and len(feature.deciles) == 9:
            edges = np.asarray(feature.deciles)
            if np.all(np.diff(edges) > 0):
                expected = np.full(10, 0.1)
                found.append(_Binning(feature.name, edges, {}, expected, chi2.isf(SWEEP_TAIL, 9)))
        elif feature.kind == "category" and len(feature.categories) >= 2:
            common = [c for c, share in feature.categories.items() if share >= _RARE]
            codes = {c: i for i, c in enumerate(common)}
            shares = [feature.categories[c] for c in common]
            expected = np.array([*shares, max(1.0 - sum(shares), 1e-3)])
            expected = expected / expected.sum()
            critical = chi2.isf(SWEEP_TAIL, len(expected) - 1)
            found.append(_Binning(feature.name, None, codes, expected, critical))
    return found


@dataclass
class _History:
    flags: deque[tuple[bool, bool]]
    bins: deque[Any]
    counts: list[Any]
    sums: list[int] = field(default_factory=lambda: [0, 0])
    previous: Any = None
    alerted: bool = False


class ExtractionDetector:
    """Keeps each principal's recent query pattern; :meth:`observe` returns an alert the
    first time a signal crosses its level (then stays quiet for that principal)."""

    def __init__(self, profile: Profile | None, window: int = 200) -> None:
        self.window = window
        self._minimum = max(window // 2, 10)
        self._binnings = _binnings(profile)
        self._histories: OrderedDict[str, _History] = OrderedDict()

    def _history(self, principal: str) -> _History:
        history = self._histories.get(principal)
        if history is None:
            history = _History(
                deque(maxlen=self.window),
                deque(maxlen=self.window),
                [np.zeros(len(b.expected), dtype=np.int64) for b in self._binnings],
            )
            self._histories[principal] = history
            if len(self._histories) > _MAX_PRINCIPALS:
                self._histories.popitem(last=False)
        else:
            self._histories.move_to_end(principal)
        return history

    def observe(
        self, principal: str, frame: Any, rows: list[tuple[Any, ...]], probabilities: Any | None
    ) -> ExtractionAlert | None:
        """Record one batch: its model input *frame*, the same instances as *rows*, and
        the class *probabilities* (None for models without them)."""
        history = self._history(principal)
        near = np.zeros(len(rows), dtype=bool)
        if probabilities is not None and probabilities.shape[1] >= 2:
            top = np.sort(probabilities, axis=1)[:, -2:]
            near = (top[:, 1] - top[:, 0]) < _BOUNDARY_GAP
        binned = None
        if self._binnings and isinstance(frame, pd.DataFrame):
            binned = np.column_stack([b.bins(frame[b.name]) for b in self._binnings])
        for index, row in enumerate(rows):
            previous = history.previous
            step = (
                previous is not None
                and len(previous) == len(row)
                and (sum(a != b for a, b in zip(previous, row, strict=True)) == 1)
            )
            history.previous = row
            if len(history.flags) == history.flags.maxlen:
                oldest = history.flags[0]
                history.sums[0] -= oldest[0]
                history.sums[1] -= oldest[1]
                if history.bins and history.bins[0] is not None:
                    for counts, b in zip(history.counts, history.bins[0], strict=True):
                        counts[b] -= 1
            flags = (bool(near[index]), bool(step))
            history.flags.append(flags)
            history.sums[0] += flags[0]
            history.sums[1] += flags[1]
            current = binned[index] if binned is not None else None
            history.bins.append(current)
            if current is not None:
                for counts, b in zip(history.counts, current, strict=True):
                    counts[b] += 1
        return self._verdict(principal, history)

    def _verdict(self, principal: str, history: _History) -> ExtractionAlert | None:
        seen = len(history.flags)
        if history.alerted or seen < self._minimum:
            return None
        for binning, counts in zip(self._binnings, history.counts, strict=True):
            total = counts.sum()
            if total < self._minimum:
                continue
            expected = binning.expected * total
            statistic = float(((counts - expected) ** 2 / expected).sum())
            if statistic > binning.critical:
                history.alerted = True
                return ExtractionAlert(principal, "sweep", round(statistic, 1), seen)
        for signal, total in zip(SIGNALS[1:], history.sums, strict=True):
            if total / seen > SHARE_LEVEL:
                history.alerted = True
                return ExtractionAlert(principal, signal, round(total / seen, 3), seen)
        return None
