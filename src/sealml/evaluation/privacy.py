"""Membership-inference risk (OWASP ML03/ML04): can an attacker tell training rows from
others by the model's answers?

Two attacks, each scored by ROC AUC (0.5: no better than a coin) and membership advantage
(the largest TPR - FPR over thresholds):

* **threshold**: the model's confidence in the true label (equivalently, its loss) as the
  membership score; members tend to get higher confidence from a model that overfits.
* **shadow models** (Shokri et al.): clones of the model trained on halves of data the
  attacker holds, whose in/out answers teach an attack classifier to recognise members;
  it is then applied to the target's answers.

``harden`` is the serving-side mitigation: labels only, or probabilities rounded; the
attacks can be re-run on hardened outputs to measure how much it helps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

HARDENING = ("none", "label", "round")


@dataclass(frozen=True)
class AttackResult:
    """How well one attack separates members from non-members."""

    attack: str
    auc: float
    advantage: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class PrivacyReport:
    """Membership-inference results; the worst attack is what gates check."""

    attacks: list[AttackResult]
    hardening: str
    members: int
    non_members: int

    def metrics(self) -> dict[str, float]:
        return {
            "privacy.membership_auc": max(a.auc for a in self.attacks),
            "privacy.membership_advantage": max(a.advantage for a in self.attacks),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "hardening": self.hardening,
            "members": self.members,
            "non_members": self.non_members,
            "metrics": self.metrics(),
            "attacks": [a.to_dict() for a in self.attacks],
        }


def harden(probabilities: Any, mode: str = "none", decimals: int = 1) -> Any:
    """Outputs as a hardened endpoint returns them: unchanged, one-hot labels, or rounded."""
    import numpy as np

    if mode not in HARDENING:
        raise UsageError(f"hardening must be one of {', '.join(HARDENING)}")
    values = np.asarray(probabilities, dtype=float)
    if mode == "label":
        hard = np.zeros_like(values)
        hard[np.arange(len(values)), values.argmax(axis=1)] = 1.0
        return hard
    if mode == "round":
        return np.round(values, decimals)
    return values


def _separation(scores: Any, membership: Any) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    auc = float(roc_auc_score(membership, scores))
    false_positive, true_positive, _ = roc_curve(membership, scores)
    return round(auc, 6), round(float((true_positive - false_positive).max()), 6)


def _true_label_confidence(probabilities: Any, labels: Any, classes: Any) -> Any:
    import numpy as np

    index = {label: i for i, label in enumerate(list(classes))}
    columns = np.array([index.get(label, -1) for label in labels])
    known = columns >= 0
    confidence = np.zeros(len(labels))
    confidence[known] = probabilities[np.arange(len(labels))[known], columns[known]]
    return confidence


def _features(probabilities: Any, labels: Any, classes: Any) -> Any:
    """What the shadow attack looks at: the true-label confidence, the sorted probability
    vector, and the entropy of the answer."""
    import numpy as np

    clipped = np.clip(probabilities, 1e-12, 1.0)
    entropy = -(clipped * np.log(clipped)).sum(axis=1)
    ordered = -np.sort(-probabilities, axis=1)
    return np.column_stack(
        [_true_label_confidence(probabilities, labels, classes), ordered, entropy]
    )


def assess(
    model: Any,
    members: tuple[Any, Any],
    non_members: tuple[Any, Any],
    *,
    train: Callable[[Any, Any], Any] | None = None,
    shadow_data: tuple[Any, Any] | None = None,
    shadows: int = 4,
    hardening: str = "none",
    seed: int = 0,
) -> PrivacyReport:
    """Attack *model* with (features, labels) of its training rows (*members*) and of rows
    it never saw (*non_members*).

    The shadow attack runs when *train* (fits a fresh copy of the model on given features
    and labels) is given; it trains *shadows* models on random halves of *shadow_data*
    (default: the non-members, which an attacker plausibly holds).
    """
    import numpy as np

    member_x, member_y = members
    other_x, other_y = non_members
    count = min(len(member_y), len(other_y))
    if count < 20:
        raise UsageError("membership inference needs at least 20 members and 20 non-members")
    rng = np.random.default_rng(seed)
    pick_in = rng.choice(len(member_y), count, replace=False)
    pick_out = rng.choice(len(other_y), count, replace=False)
    classes = model.classes_

    def answers(x: Any, rows: Any) -> Any:
        subset = x.iloc[rows] if hasattr(x, "iloc") else np.asarray(x)[rows]
        return harden(model.predict_proba(subset), hardening)

    labels_in = np.asarray(member_y)[pick_in]
    labels_out = np.asarray(other_y)[pick_out]
    probabilities = np.vstack([answers(member_x, pick_in), answers(other_x, pick_out)])
    labels = np.concatenate([labels_in, labels_out])
    membership = np.concatenate([np.ones(count), np.zeros(count)])
    attacks = [
        AttackResult(
            "threshold",
            *_separation(_true_label_confidence(probabilities, labels, classes), membership),
        )
    ]
    if train is not None:
        attacks.append(
            _shadow_attack(
                train, shadow_data or non_members, shadows, hardening, rng,
                _features(probabilities, labels, classes), membership,
            )
        )  # fmt: skip
    return PrivacyReport(attacks, hardening, count, count)


def _shadow_attack(
    train: Callable[[Any, Any], Any],
    data: tuple[Any, Any],
    shadows: int,
    hardening: str,
    rng: Any,
    target_features: Any,
    membership: Any,
) -> AttackResult:
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    features, labels = data
    labels = np.asarray(labels)
    rows = len(labels)
    if rows < 40:
        raise UsageError("the shadow attack needs at least 40 rows of attacker data")
    inputs, outputs = [], []
    for _ in range(max(1, shadows)):
        order = rng.permutation(rows)
        half_in, half_out = order[: rows // 2], order[rows // 2 : 2 * (rows // 2)]
        take = (lambda r: features.iloc[r]) if hasattr(features, "iloc") else (
            lambda r: np.asarray(features)[r]
        )  # fmt: skip
        shadow = train(take(half_in), labels[half_in])
        for half, inside in ((half_in, 1.0), (half_out, 0.0)):
            probabilities = harden(shadow.predict_proba(take(half)), hardening)
            inputs.append(_features(probabilities, labels[half], shadow.classes_))
            outputs.append(np.full(len(half), inside))
    attack = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    attack.fit(np.vstack(inputs), np.concatenate(outputs))
    scores = attack.predict_proba(target_features)[:, 1]
    return AttackResult("shadow", *_separation(scores, membership))
