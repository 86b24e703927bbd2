"""Drift detection: sealml against Evidently's data-drift preset on the same data.

1,000,000 rows x 20 columns (14 numeric of mixed shapes, 6 categorical with 5 to 50
categories), reference and current drawn independently from the same generator, then one
of five changes applied to the current sample: none; a 0.2-standard-deviation mean shift
in two numeric columns; a 1.5x spread change in one; a ten-point shift of a common category
(17.8% -> 27.8%); a ten-point shift of a rare one (3.7% -> 13.7%).

sealml runs in this process in both modes (``evidently``: the preset's statistics and
thresholds; ``default``: significance and effect size); Evidently 0.7 runs in its own venv
(bench/out/peers/evidently, pandas < 3) on the same data read from Parquet. Each reports
the time of the comparison itself (sealml: the median of three) and the memory it needed
above the input: sealml's peak allocation in a separate run under tracemalloc (which sees
NumPy's and pandas' buffers), Evidently's peak resident memory above its resident memory
with the input loaded. Printed: times, memory, flagged columns of each, and the largest
difference between sealml's and Evidently's scores.

Usage: python bench/drift.py [--rows 1000000] [--small-rows 100000] [--cases all]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import tracemalloc
import venv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "out" / "peers"
CASES = ["none", "mean_shift", "spread", "common_category", "rare_category"]
SHIFTED = ["n00_normal", "n03_lognormal"]
SPREAD = "n06_bimodal"
TARGET = "c0_segment"  # shares 40 / 17.8 / 23.5 / 15 / 3.7 %
SEGMENTS = {"retail": 0.40, "wholesale": 0.178, "online": 0.235, "partner": 0.15, "other": 0.037}

DRIVER = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
ref_path, cur_path, numeric, categorical = sys.argv[1], sys.argv[2], *json.loads(sys.argv[3])
reference, current = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
ref = Dataset.from_pandas(reference, data_definition=definition)
cur = Dataset.from_pandas(current, data_definition=definition)
def rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()
before = rss()
started = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(cur, ref)
seconds = time.perf_counter() - started
# Peak resident memory above what the loaded input already used (tracemalloc would slow
# the timed run down).
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
scores = {}
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if config.get("type", "").endswith("ValueDrift"):
        scores[config["column"]] = {"score": metric["value"], "threshold": config["threshold"],
                                    "method": config["method"]}
print(json.dumps({"seconds": seconds, "peak_mib": peak / 2**20, "scores": scores}))
"""


def generate(rows: int, seed: int) -> pd.DataFrame:
    """Fourteen numeric columns of different shapes and six categorical ones."""
    rng = np.random.default_rng(seed)
    numeric = {
        "n00_normal": rng.normal(50, 10, rows),
        "n01_uniform": rng.uniform(0, 100, rows),
        "n02_exponential": rng.exponential(3.0, rows),
        "n03_lognormal": rng.lognormal(3.0, 0.5, rows),
        "n04_student_t": rng.standard_t(3, rows),
        "n05_poisson": rng.poisson(4, rows).astype("float64"),
        "n06_bimodal": np.where(rng.random(rows) < 0.4, rng.normal(-2, 1, rows),
                                rng.normal(3, 1.5, rows)),
        "n07_beta": rng.beta(2, 5, rows),
        "n08_zero_inflated": np.where(rng.random(rows) < 0.7, 0.0, rng.gamma(2, 50, rows)),
        "n09_integer_age": rng.integers(18, 90, rows).astype("float64"),
        "n10_gamma": rng.gamma(0.8, 2.0, rows),
        "n11_skewed_income": rng.pareto(3.0, rows) * 20_000 + 15_000,
        "n12_rounded": np.round(rng.normal(100, 15, rows), 0),
        "n13_weibull": rng.weibull(1.5, rows),
    }  # fmt: skip
    categorical = {TARGET: rng.choice(list(SEGMENTS), rows, p=list(SEGMENTS.values()))}
    for index, size in enumerate((8, 12, 20, 30, 50), start=1):
        shares = 1.0 / np.arange(1, size + 1) ** 1.1  # Zipf-like
        names = [f"v{k:02d}" for k in range(size)]
        categorical[f"c{index}_{size}"] = rng.choice(names, rows, p=shares / shares.sum())
    return pd.DataFrame({**numeric, **categorical})


def change(current: pd.DataFrame, case: str, reference: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1000)
    frame = current.copy()
    if case == "mean_shift":
        for name in SHIFTED:
            frame[name] = frame[name] + 0.2 * reference[name].std()
    elif case == "spread":
        centre = frame[SPREAD].mean()
        frame[SPREAD] = centre + 1.5 * (frame[SPREAD] - centre)
    elif case in ("common_category", "rare_category"):
        target = "wholesale" if case == "common_category" else "other"
        shares = dict(SEGMENTS)
        rest = 1.0 - shares[target]
        shares = {k: (v + 0.10 if k == target else v * (rest - 0.10) / rest)
                  for k, v in shares.items()}  # fmt: skip
        frame[TARGET] = rng.choice(list(shares), len(frame), p=list(shares.values()))
    return frame


def evidently_python() -> Path:
    home = PEERS / "evidently"
    python = home / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        subprocess.run([python, "-m", "pip", "install", "-q", "evidently>=0.7,<0.8",
                        "pandas<3"], check=True)  # fmt: skip
    return python


def sealml_run(reference: pd.DataFrame, current: pd.DataFrame, mode: str) -> dict[str, Any]:
    """The median time of three runs, then the peak allocation of a fourth (tracemalloc,
    which sees NumPy's and pandas' buffers, slows the run it watches)."""
    from sealml.monitoring.drift import compare

    times = []
    for _ in range(3):
        started = time.perf_counter()
        report = compare(reference, current, mode=mode)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    seconds = sorted(times)[1]
    tracemalloc.start()
    compare(reference, current, mode=mode)  # type: ignore[arg-type]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "seconds": round(seconds, 3),
        "peak_mib": round(peak / 2**20, 1),
        "flagged": report.drifted,
        "scores": {c.column: c.score for c in report.columns},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--cases", default="all")
    parser.add_argument("--skip-evidently", action="store_true")
    args = parser.parse_args()
    cases = CASES if args.cases == "all" else args.cases.split(",")
    reference = generate(args.rows, 1)
    base = generate(args.rows, 2)
    numeric = [c for c in reference.columns if c.startswith("n")]
    categorical = [c for c in reference.columns if c.startswith("c")]
    python = None if args.skip_evidently else evidently_python()
    results = {}
    with tempfile.TemporaryDirectory(prefix="sealml-bench-drift-") as folder:
        ref_path = Path(folder) / "reference.parquet"
        reference.to_parquet(ref_path)
        for case in cases:
            current = change(base, case, reference, 2)
            row: dict[str, Any] = {
                "sealml_evidently_mode": sealml_run(reference, current, "evidently"),
                "sealml_default_mode": sealml_run(reference, current, "default"),
            }
            small_ref, small_cur = (
                reference.iloc[: args.small_rows],
                current.iloc[: args.small_rows],
            )
            row["sealml_evidently_mode_small"] = {
                k: v for k, v in sealml_run(small_ref, small_cur, "evidently").items()
                if k in ("seconds", "peak_mib", "flagged")
            }  # fmt: skip
            if python is not None:
                cur_path = Path(folder) / "current.parquet"
                current.to_parquet(cur_path)
                done = subprocess.run(
                    [python, "-c", DRIVER, ref_path, cur_path, json.dumps([numeric, categorical])],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                peer = json.loads(done.stdout.strip().splitlines()[-1])
                ours = row["sealml_evidently_mode"]["scores"]
                flagged = sorted(
                    c for c, s in peer["scores"].items() if s["score"] >= s["threshold"]
                )
                differences = [abs(ours[c] - s["score"]) for c, s in peer["scores"].items()]
                row["evidently"] = {
                    "seconds": round(peer["seconds"], 2),
                    "peak_mib": round(peer["peak_mib"], 1),
                    "flagged": flagged,
                }
                row["agreement"] = {
                    "same_verdicts": sorted(row["sealml_evidently_mode"]["flagged"]) == flagged,
                    "max_score_difference": max(differences),
                    "speedup": round(peer["seconds"] / row["sealml_evidently_mode"]["seconds"], 1),
                }
            for mode in ("sealml_evidently_mode", "sealml_default_mode"):
                row[mode]["scores"] = {k: round(v, 6) for k, v in row[mode]["scores"].items()}
            results[case] = row
    print(json.dumps({"benchmark": "drift", "rows": args.rows, "small_rows": args.small_rows,
                      "columns": {"numeric": len(numeric), "categorical": len(categorical)},
                      "cases": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
