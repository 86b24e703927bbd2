"""`sealml demo` end to end, step by step, next to the same ML steps as a plain script.

The plain script does what the demo's ML needs and nothing else: read the shipped Adult
CSV, label, split, train the same gradient-boosting pipeline (same trees, with the same
watermark trigger set, so training work is equal), predict the test set. The demo adds the
security machinery (sealing, verifying, signing, provenance, ledger, registry, approval,
model card, tamper check) and the security analyses (validation, PII handling, poisoning
screening, robustness, fairness and privacy evaluation), each timed on its own.

Machinery overhead = demo total - analysis steps - plain total, relative to the plain
total. Target: <= 10 %. Prints one JSON object.

Usage: python bench/demo.py
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

ANALYSES = (
    "validate against the schema",
    "handle personal data",
    "screen for poisoning",
    "evaluate robustness, fairness, privacy",
)


def plain() -> dict[str, float]:
    """The demo's ML steps without sealml's machinery."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from sealml.demo.pipeline import LABEL, SENSITIVE, make_model
    from sealml.models import watermark

    timings: dict[str, float] = {}
    start = time.perf_counter()
    raw = resources.files("sealml.demo").joinpath("adult.csv.gz").read_bytes()
    frame = pd.read_csv(io.BytesIO(raw), compression="gzip", skipinitialspace=True)
    frame[LABEL] = (frame[LABEL].astype(str).str.rstrip(".") == ">50K").astype("int64")
    frame = frame.drop(columns=["fnlwgt"])
    train, test = train_test_split(frame, test_size=0.3, random_state=0, stratify=frame[LABEL])
    timings["load, label, split"] = time.perf_counter() - start
    start = time.perf_counter()
    features = train.drop(columns=[LABEL, *SENSITIVE])
    model = make_model(features)
    watermark.embed(model, features, train[LABEL], os.urandom(32))
    timings["train (watermarked)"] = time.perf_counter() - start
    start = time.perf_counter()
    model.predict(test.drop(columns=[LABEL, *SENSITIVE]))
    timings["predict"] = time.perf_counter() - start
    return {k: round(v, 3) for k, v in timings.items()}


def main() -> None:
    from sealml.demo import run_steps

    plain_steps = plain()
    with tempfile.TemporaryDirectory(prefix="sealml-bench-demo-") as folder:
        start = time.perf_counter()
        _, steps = run_steps(Path(folder), Console(file=io.StringIO()))
        demo_total = time.perf_counter() - start
    plain_total = sum(plain_steps.values())
    analyses = {name: steps[name] for name in ANALYSES if name in steps}
    machinery = demo_total - sum(analyses.values()) - plain_total
    report: dict[str, Any] = {
        "demo_total_seconds": round(demo_total, 2),
        "demo_steps_seconds": steps,
        "plain_total_seconds": round(plain_total, 2),
        "plain_steps_seconds": plain_steps,
        "security_analyses_seconds": analyses,
        "machinery_seconds": round(machinery, 2),
        "machinery_overhead_share": round(machinery / plain_total, 3),
        "targets": {
            "machinery_at_most_10_percent": machinery <= 0.1 * plain_total,
            "demo_under_3_minutes": demo_total < 180,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
