"""Evaluation of a trained model: fairness, privacy risk (and, later, robustness)."""
