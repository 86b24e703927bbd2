"""Evasion robustness (OWASP ML01): how often can a bounded change to an input flip the
model's answer?

A *budget* says how far each feature may move: numeric features by ``epsilon`` times
their standard deviation (integers stay integers, and nothing leaves the range seen in the
data), categorical features to another valid category only when ``categorical`` is set,
immutable features never. Three attacks work inside it, all on the model as a black box
that answers ``predict_proba`` (so pipelines with encoders work unchanged):

* **noise**: random points in the budget box (the baseline any model should survive);
* **gradient** (FGSM, then PGD steps): the gradient of the true-label probability,
  estimated by central differences in one batched call per step, for smooth models
  (linear models, neural networks);
* **coordinate**: a score-based greedy search that moves one feature at a time to the
  value in its budget that lowers the true-label probability most, for models with flat
  regions and steps (trees, forests, boosting), where gradients are zero almost everywhere.

A row counts as broken when any attack flips a correct prediction within the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

ATTACKS = ("noise", "gradient", "coordinate")


@dataclass(frozen=True)
class Budget:
    """How far an attacker may move each feature."""

    epsilon: float
    immutable: tuple[str, ...] = ()
    categorical: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon <= 10:
            raise UsageError("epsilon is in standard deviations: between 0 and 10")


@dataclass
class AttackOutcome:
    attack: str
    success_rate: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class RobustnessResult:
    """Clean and robust accuracy at one budget."""

    epsilon: float
    clean_accuracy: float
    robust_accuracy: float
    attacks: list[AttackOutcome] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "attacks": [a.to_dict() for a in self.attacks]}


class _Space:
    """The feature space of a DataFrame: numeric bounds and steps, categories, what is fixed."""

    def __init__(self, reference: Any, budget: Budget) -> None:
        import numpy as np
        import pandas as pd

        self.columns = list(reference.columns)
        unknown = [c for c in budget.immutable if c not in self.columns]
        if unknown:
            raise UsageError(f"immutable feature {unknown[0]!r} is not a column")
        self.numeric: list[str] = []
        self.integer: set[str] = set()
        self.categories: dict[str, list[Any]] = {}
        self.radius: dict[str, float] = {}
        self.low: dict[str, float] = {}
        self.high: dict[str, float] = {}
        for column in self.columns:
            if column in budget.immutable:
                continue
            values = reference[column]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                finite = values.dropna().astype(float)
                if finite.empty:
                    continue
                self.numeric.append(column)
                self.radius[column] = budget.epsilon * float(np.std(finite))
                self.low[column], self.high[column] = float(finite.min()), float(finite.max())
                if pd.api.types.is_integer_dtype(values):
                    self.integer.add(column)
            elif budget.categorical:
                self.categories[column] = sorted(values.dropna().unique().tolist(), key=str)

    def clip(self, frame: Any, origin: Any) -> Any:
        """*frame* projected back into the budget around *origin* and the valid ranges."""
        import numpy as np
        import pandas as pd

        for column in self.numeric:
            radius = self.radius[column]
            base = _floats(origin[column])
            moved = np.clip(_floats(frame[column]), base - radius, base + radius)
            moved = np.clip(moved, self.low[column], self.high[column])
            if column in self.integer:
                moved = np.clip(np.round(moved), np.ceil(base - radius), np.floor(base + radius))
                frame[column] = pd.Series(moved, index=frame.index).astype(origin[column].dtype)
            else:
                frame[column] = moved
        return frame


def _floats(series: Any) -> Any:
    """A column as floats (NaN for missing), whatever its dtype (nullable ones included)."""
    import numpy as np

    return series.to_numpy(dtype=float, na_value=np.nan)


def _true_probability(model: Any, frame: Any, labels: Any) -> Any:
    import numpy as np

    probabilities = model.predict_proba(frame)
    index = {label: i for i, label in enumerate(model.classes_)}
    columns = np.array([index[label] for label in labels])
    return probabilities[np.arange(len(frame)), columns]


def _flipped(model: Any, frame: Any, labels: Any) -> Any:
    import numpy as np

    return np.asarray(model.predict(frame)) != np.asarray(labels)


def noise_attack(model: Any, rows: Any, labels: Any, space: _Space, trials: int, rng: Any) -> Any:
    """Rows broken by any of *trials* random points in the budget."""
    import numpy as np

    broken = np.zeros(len(rows), dtype=bool)
    for _ in range(trials):
        candidate = rows.copy()
        for column in space.numeric:
            radius = space.radius[column]
            candidate[column] = _floats(rows[column]) + rng.uniform(-radius, radius, len(rows))
        for column, values in space.categories.items():
            candidate[column] = rng.choice(values, len(rows))
        broken |= _flipped(model, space.clip(candidate, rows), labels)
    return broken


def gradient_attack(model: Any, rows: Any, labels: Any, space: _Space, steps: int = 10) -> Any:
    """FGSM then PGD on the true-label probability, with gradients by central differences
    (one batched ``predict_proba`` per step)."""
    import numpy as np
    import pandas as pd

    if not space.numeric:
        return np.zeros(len(rows), dtype=bool)
    broken = np.zeros(len(rows), dtype=bool)
    current = rows.copy()
    for step in range(max(1, steps)):
        deltas = []
        batch = []
        for column in space.numeric:
            width = max(space.radius[column] * 0.05, 1e-6)
            for sign in (1.0, -1.0):
                shifted = current.copy()
                shifted[column] = _floats(current[column]) + sign * width
                batch.append(shifted)
            deltas.append(width)
        scores = _true_probability(
            model, pd.concat(batch, ignore_index=True), np.tile(labels, len(batch))
        )
        scores = scores.reshape(len(batch), len(rows))
        moved = current.copy()
        for i, column in enumerate(space.numeric):
            gradient = (scores[2 * i] - scores[2 * i + 1]) / (2 * deltas[i])
            size = space.radius[column] if step == 0 else space.radius[column] / 4
            moved[column] = _floats(current[column]) - size * np.sign(gradient)
        current = space.clip(moved, rows)
        broken |= _flipped(model, current, labels)
    return broken


def coordinate_attack(
    model: Any, rows: Any, labels: Any, space: _Space, points: int = 5, rounds: int = 2
) -> Any:
    """Greedy search one feature at a time over a grid of values inside the budget,
    keeping whichever move lowers the true-label probability most."""
    return _coordinate_search(model, rows, labels, space, points, rounds)[0]


def _coordinate_search(
    model: Any, rows: Any, labels: Any, space: _Space, points: int, rounds: int
) -> tuple[Any, Any]:
    """The rows the coordinate search broke, and the points it ended at."""
    import numpy as np
    import pandas as pd

    current = rows.copy()
    best = _true_probability(model, current, labels)
    broken = _flipped(model, current, labels)
    for _ in range(rounds):
        for column in [*space.numeric, *space.categories]:
            if column in space.categories:
                values = space.categories[column]
                candidates = []
                for value in values:
                    moved = current.copy()
                    moved[column] = value
                    candidates.append(moved)
            else:
                radius = space.radius[column]
                base = _floats(rows[column])
                candidates = []
                for offset in np.linspace(-radius, radius, points):
                    moved = current.copy()
                    moved[column] = base + offset
                    candidates.append(space.clip(moved, rows))
            stacked = pd.concat(candidates, ignore_index=True)
            scores = _true_probability(model, stacked, np.tile(labels, len(candidates)))
            scores = scores.reshape(len(candidates), len(rows))
            choice = scores.argmin(axis=0)
            improved = scores[choice, np.arange(len(rows))] < best
            if improved.any():
                picked = np.where(improved, choice, -1)
                for k, candidate in enumerate(candidates):
                    take = picked == k
                    if take.any():
                        current.loc[take, column] = candidate.loc[take, column].to_numpy()
                best = np.minimum(best, scores[choice, np.arange(len(rows))])
            broken |= _flipped(model, current, labels)
    return broken, current


def assess(
    model: Any,
    features: Any,
    labels: Any,
    budgets: list[Budget],
    *,
    attacks: tuple[str, ...] = ATTACKS,
    rows: int = 500,
    noise_trials: int = 10,
    seed: int = 0,
    reference: Any = None,
) -> list[RobustnessResult]:
    """Clean and robust accuracy of *model* on (a sample of) *features*/*labels* for each
    budget; robust accuracy counts a row correct only if no attack flips it. Budgets are
    scaled, and values bounded, by *reference* (default: *features*; pass the training
    data when attacking a small sample)."""
    import numpy as np

    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise UsageError(f"unknown attack {unknown[0]!r} (known: {', '.join(ATTACKS)})")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(features), min(rows, len(features)), replace=False)
    sample = features.iloc[pick].reset_index(drop=True)
    truth = np.asarray(labels)[pick]
    correct = ~_flipped(model, sample, truth)
    clean = float(correct.mean())
    results = []
    for budget in budgets:
        space = _Space(features if reference is None else reference, budget)
        targets, target_labels = sample[correct].reset_index(drop=True), truth[correct]
        broken = np.zeros(len(targets), dtype=bool)
        outcomes = []
        for attack in attacks:
            start = time.perf_counter()
            if len(targets) == 0 or (budget.epsilon == 0 and not budget.categorical):
                hit = np.zeros(len(targets), dtype=bool)
            elif attack == "noise":
                hit = noise_attack(model, targets, target_labels, space, noise_trials, rng)
            elif attack == "gradient":
                hit = gradient_attack(model, targets, target_labels, space)
            else:
                hit = coordinate_attack(model, targets, target_labels, space)
            broken |= hit
            rate = float(hit.mean()) if len(hit) else 0.0
            outcomes.append(
                AttackOutcome(attack, round(rate, 6), round(time.perf_counter() - start, 3))
            )
        robust = float((correct.sum() - broken.sum()) / len(sample))
        results.append(
            RobustnessResult(budget.epsilon, round(clean, 6), round(robust, 6), outcomes)
        )
    return results


def metrics(results: list[RobustnessResult]) -> dict[str, float]:
    """Gate metrics: ``robustness.accuracy@EPS`` per budget and the clean accuracy."""
    found: dict[str, float] = {}
    for result in results:
        found["robustness.clean_accuracy"] = result.clean_accuracy
        found[f"robustness.accuracy@{result.epsilon:g}"] = result.robust_accuracy
    return found


def adversarial_training(
    make: Any, features: Any, labels: Any, budget: Budget, *, rows: int = 2000, seed: int = 0
) -> Any:
    """Fit a model, attack (a sample of) its training rows within *budget*, and refit on the
    data plus the adversarial rows that broke it (one round of adversarial training)."""
    import numpy as np
    import pandas as pd

    model = make().fit(features, labels)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(features), min(rows, len(features)), replace=False)
    sample = features.iloc[pick].reset_index(drop=True)
    truth = np.asarray(labels)[pick]
    space = _Space(features, budget)
    broken, points = _coordinate_search(model, sample, truth, space, points=5, rounds=2)
    if not broken.any():
        return model
    all_x = pd.concat([features.reset_index(drop=True), points[broken]], ignore_index=True)
    all_y = np.concatenate([np.asarray(labels), truth[broken]])
    return make().fit(all_x, all_y)
