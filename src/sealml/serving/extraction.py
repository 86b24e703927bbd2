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

import bisect
import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ..data.profile import Profile
from .schema import numeric_features

SIGNALS = ("sweep", "boundary", "line-search")
SHARE_LEVEL = 0.5
SWEEP_TAIL = 1e-6
_BOUNDARY_GAP = 0.1
_RARE = 0.02
_MAX_PRINCIPALS = 10_000
_CHECK_EVERY = 10  # instances between two looks at a principal's shares


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
    column: int | None  # numeric: its column in the numeric matrix; None for categories
    edges: Any  # numeric: decile edges
    codes: dict[str, int]  # categories: category -> bin (rare ones share the last bin)
    expected: list[float]
    critical: float

    def bin(self, instance: Any, numeric: list[float]) -> int:
        if self.column is not None:
            return bisect.bisect_right(self.edges, numeric[self.column])
        return self.codes.get(str(instance[self.name]), len(self.expected) - 1)


def _binnings(profile: Profile | None) -> list[_Binning]:
    from scipy.stats import chi2  # SciPy's import costs half a second: only when serving

    found = []
    for column, feature in enumerate(numeric_features(profile)):
        edges = list(feature.deciles)
        if len(edges) == 9 and all(a < b for a, b in itertools.pairwise(edges)):
            critical = chi2.isf(SWEEP_TAIL, 9)
            found.append(_Binning(feature.name, column, edges, {}, [0.1] * 10, critical))
    for feature in profile.features if profile else ():
        if feature.kind == "category" and len(feature.categories) >= 2:
            common = [c for c, share in feature.categories.items() if share >= _RARE]
            codes = {c: i for i, c in enumerate(common)}
            shares = [feature.categories[c] for c in common]
            weights = [*shares, max(1.0 - sum(shares), 1e-3)]
            expected = [w / sum(weights) for w in weights]
            critical = chi2.isf(SWEEP_TAIL, len(expected) - 1)
            found.append(_Binning(feature.name, None, None, codes, expected, critical))
    return found


@dataclass
class _History:
    flags: deque[tuple[bool, bool]]
    bins: deque[list[int] | None]
    counts: list[list[int]]
    sums: list[int] = field(default_factory=lambda: [0, 0])
    previous: Any = None
    alerted: bool = False
    unchecked: int = 0


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
                [[0] * len(b.expected) for b in self._binnings],
            )
            self._histories[principal] = history
            if len(self._histories) > _MAX_PRINCIPALS:
                self._histories.popitem(last=False)
        else:
            self._histories.move_to_end(principal)
        return history

    def observe(
        self,
        principal: str,
        instances: list[Any],
        numeric: list[list[float]],
        probabilities: list[list[float]] | None,
    ) -> ExtractionAlert | None:
        """Record one batch: the validated *instances*, their :func:`numeric_rows`, and
        the class *probabilities* (None for models without them)."""
        history = self._history(principal)
        binned = bool(self._binnings) and bool(instances) and isinstance(instances[0], dict)
        for index, instance in enumerate(instances):
            near = False
            if probabilities is not None and len(probabilities[index]) >= 2:
                top = sorted(probabilities[index])[-2:]
                near = top[1] - top[0] < _BOUNDARY_GAP
            row = tuple(instance.values()) if isinstance(instance, dict) else tuple(instance)
            previous = history.previous
            step = (
                previous is not None
                and len(previous) == len(row)
                and sum(a != b for a, b in zip(previous, row, strict=True)) == 1
            )
            history.previous = row
            if len(history.flags) == history.flags.maxlen:
                oldest, oldest_bins = history.flags[0], history.bins[0]
                history.sums[0] -= oldest[0]
                history.sums[1] -= oldest[1]
                if oldest_bins is not None:
                    for counts, b in zip(history.counts, oldest_bins, strict=True):
                        counts[b] -= 1
            history.flags.append((near, step))
            history.sums[0] += near
            history.sums[1] += step
            bins = None
            if binned:
                bins = [b.bin(instance, numeric[index]) for b in self._binnings]
                for counts, b in zip(history.counts, bins, strict=True):
                    counts[b] += 1
            history.bins.append(bins)
        history.unchecked += len(instances)
        if history.unchecked < _CHECK_EVERY:
            return None
        history.unchecked = 0
        return self._verdict(principal, history)

    def _verdict(self, principal: str, history: _History) -> ExtractionAlert | None:
        seen = len(history.flags)
        if history.alerted or seen < self._minimum:
            return None
        for binning, counts in zip(self._binnings, history.counts, strict=True):
            total = sum(counts)
            if total < self._minimum:
                continue
            statistic = sum(
                (c - e * total) ** 2 / (e * total)
                for c, e in zip(counts, binning.expected, strict=True)
            )
            if statistic > binning.critical:
                history.alerted = True
                return ExtractionAlert(principal, "sweep", round(statistic, 1), seen)
        for signal, total in zip(SIGNALS[1:], history.sums, strict=True):
            if total / seen > SHARE_LEVEL:
                history.alerted = True
                return ExtractionAlert(principal, signal, round(total / seen, 3), seen)
        return None
