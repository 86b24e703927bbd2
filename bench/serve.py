"""Serving throughput and latency: sealml serve against a bare FastAPI app and MLflow.

The same scikit-learn model, trained on the Adult data shipped with sealml (``--model hgb``:
gradient boosting on the numeric inputs, the default; ``--model demo``: the demo's pipeline
with its category encoder, whose single-row prediction alone costs ~14 ms), behind:

(a) ``bare``: a FastAPI + uvicorn app with the same TLS certificate and nothing else
    (parse JSON, build the frame, predict), and ``bare_array``: the same app with
    sealml's own input path (one float array, scikit-learn's finiteness check skipped),
    which isolates what sealml's checks cost;
(b) ``sealml``: ``sealml serve`` with TLS, API-key auth, validation against the training
    schema, rate limiting (limits set high), the extraction detector, JSON logs, metrics
    and sampled, sealed prediction logs, all at their defaults;
(c) ``mlflow``: ``mlflow models serve`` (version pinned in bench/requirements-mlflow.txt,
    in its own venv under bench/out/peers/mlflow; plain HTTP, as it ships).

The load comes from wrk (Debian package ``wrk``) in its own process: one request with one
instance, N connections, for S seconds per run. The servers take turns over R rounds (the
order rotates each round); each round reports requests/s, p50 and p99 latency and the
server's CPU time per request (its whole process tree, from psutil), and the ratios
sealml/bare and sealml/mlflow. Targets (issue 7): median sealml/bare throughput >= 0.85
(confirmed by CPU per request), sealml p99 <= 1.2x bare p99, sealml >= 4x mlflow.

Usage: python bench/serve.py [--rounds 8] [--seconds 5] [--connections 8]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "out" / "peers"
PASSPHRASE = "bench passphrase"
SERVICE_PASSWORD = "bench-service-1"

BARE_APP = r"""
import pickle, sys, warnings
import numpy as np, orjson, pandas as pd, sklearn, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

model_path, port, cert, key, mode = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
with open(model_path, "rb") as handle:
    model = pickle.load(handle)  # the benchmark's own file
features = list(model.feature_names_in_)
warnings.filterwarnings("ignore", message="X does not have valid feature names")
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if mode == "frame":
        frame = pd.DataFrame.from_records(body["instances"], columns=features)
        labels = model.predict(frame)
    else:  # sealml's input path: one float array, finiteness taken as checked
        array = np.array([[i[f] for f in features] for i in body["instances"]], dtype="float64")
        with sklearn.config_context(assume_finite=True):
            labels = model.predict(array)
    return Response(orjson.dumps({"predictions": labels.tolist()}),
                    media_type="application/json")


uvicorn.run(app, host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key,
            log_level="warning", access_log=False)
"""

MLFLOW_SAVE = r"""
import pickle, sys
import mlflow.sklearn
with open(sys.argv[1], "rb") as handle:
    model = pickle.load(handle)  # the benchmark's own file
mlflow.sklearn.save_model(model, sys.argv[2], skops_trusted_types=[
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"])
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
{headers}
"""


def adult(kind: str) -> tuple[pd.DataFrame, pd.Series, Any]:
    """Inputs, labels and the unfitted model: ``hgb`` is gradient boosting on Adult's numeric
    inputs (about 2 ms per single-row prediction here); ``demo`` is the demo's pipeline with
    its ordinal encoder for the categories (about 14 ms, most of it in ColumnTransformer)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sealml.demo.pipeline import LABEL, SENSITIVE, make_model

    with (files("sealml.demo") / "adult.csv.gz").open("rb") as handle:
        frame = pd.read_csv(handle, compression="gzip", skipinitialspace=True).dropna()
    label = (frame[LABEL].astype(str).str.rstrip(".") == ">50K").astype("int64")
    features = frame.drop(columns=[LABEL, *SENSITIVE, "fnlwgt"])
    if kind == "demo":
        return features, label, make_model(features)
    numeric = features.select_dtypes("number")
    if kind == "lr":
        return numeric, label, make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return numeric, label, HistGradientBoostingClassifier(max_iter=150, random_state=0)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mlflow_python() -> Path:
    home = PEERS / "mlflow"
    python = home / "bin" / "python"
    if not (home / "bin" / "mlflow").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        requirements = ROOT / "bench" / "requirements-mlflow.txt"
        subprocess.run([python, "-m", "pip", "install", "-q", "-r", requirements], check=True)
    return python


def build(out: Path, kind: str) -> dict[str, Any]:
    """Model, workspace (registered, promoted, API key), TLS files, MLflow model folder."""
    from sealml import Secret, Workspace
    from sealml.crypto.kdf import FAST_PARAMS
    from sealml.models.formats import dump_skops, media_type_for
    from sealml.pipeline import codecs
    from sealml.serving.tls import dev_tls

    features, label, model = adult(kind)
    model.fit(features, label)
    model_file = out / "model.pkl"
    model_file.write_bytes(pickle.dumps(model))
    path = out / "ws"
    workspace = Workspace.init(path, passphrase=Secret(PASSPHRASE),
                               admin_password=Secret("bench-admin-1"), kdf=FAST_PARAMS)  # fmt: skip
    with workspace:
        data = codecs.encode("dataset", features.assign(income=label), "train")
        dataset = workspace.put(io.BytesIO(data), "dataset", "train.parquet",
                                media_type=codecs.CODECS["dataset"].media_type)  # fmt: skip
        artifact = workspace.put(io.BytesIO(dump_skops(model)), "model", "income.skops",
                                 media_type=media_type_for("income.skops"),
                                 parents=[dataset.id])  # fmt: skip
        workspace.register_model(artifact.id, "income")
        workspace.promote_model("income", 1, "bench")
        workspace.add_user("svc", ["service"], password=Secret(SERVICE_PASSWORD))
        _, key = workspace.create_api_key("bench", scopes=["predict"], models=["income"])
    tls = dev_tls(out / "tls", "127.0.0.1")
    mlflow_model = out / "mlflow-model"
    saved = subprocess.run(
        [mlflow_python(), "-c", MLFLOW_SAVE, model_file, mlflow_model],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if saved.returncode:
        raise RuntimeError(f"saving the MLflow model failed: {saved.stderr[-2000:]}")
    instance = features.iloc[[0]].to_dict(orient="records")[0]
    return {"model": model_file, "workspace": path, "key": key, "tls": tls,
            "mlflow_model": mlflow_model, "instance": instance}  # fmt: skip


def high_limits(path: Path) -> None:
    import tomllib

    import tomli_w

    config = tomllib.loads((path / "sealml.toml").read_text())
    limits = {"key_rate": 1e9, "key_burst": 10**9, "address_rate": 1e9, "address_burst": 10**9}
    config.setdefault("serve", {}).update(limits)
    (path / "sealml.toml").write_text(tomli_w.dumps(config))


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[Any]:
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=sink)
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[:3]} exited: {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready, verify=False, timeout=1).status_code < 500:  # noqa: S501 (a readiness probe)
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{command[:3]} did not become ready")
                time.sleep(0.2)
            yield psutil.Process(process.pid)
        finally:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        child.terminate()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            total += times.user + times.system
    return total


_DURATION = re.compile(r"([\d.]+)(us|ms|s)\b")


def _seconds(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def wrk(url: str, script: Path, seconds: float, connections: int) -> dict[str, float]:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = result.stdout
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    percentiles = dict(re.findall(r"^\s+(50|99)\.000%\s+(\S+)", text, re.M)) or dict(
        re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M)
    )
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_ms": _seconds(percentiles["50"]) * 1000,
        "p99_ms": _seconds(percentiles["99"]) * 1000,
        "errors": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--model", choices=["lr", "hgb", "demo"], default="lr")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    out = Path(tempfile.mkdtemp(prefix="sealml-bench-serve-"))
    state = out / "state"
    os.environ["SEALML_STATE_DIR"] = str(state)
    built = build(out, args.model)
    high_limits(built["workspace"])
    tls = built["tls"]
    instance = json.dumps({"instances": [built["instance"]]})
    mlflow_body = json.dumps({"dataframe_records": [built["instance"]]})
    scripts = {}
    for name, body, headers in (
        ("bare", instance, ""),
        ("bare_array", instance, ""),
        ("sealml", instance, f'wrk.headers["X-API-Key"] = "{built["key"]}"'),
        ("mlflow", mlflow_body, ""),
    ):
        scripts[name] = out / f"{name}.lua"
        scripts[name].write_text(WRK_SCRIPT.format(body=body, headers=headers))
    ports = {name: free_port() for name in ("bare", "bare_array", "sealml", "mlflow")}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SEALML_")}
    base_env |= {"OMP_NUM_THREADS": "1", "SEALML_STATE_DIR": str(state)}
    sealml_env = base_env | {
        "SEALML_WORKSPACE": str(built["workspace"]),
        "SEALML_PASSPHRASE": PASSPHRASE,
        "SEALML_USER": "svc",
        "SEALML_PASSWORD": SERVICE_PASSWORD,
    }
    bare = f"https://127.0.0.1:{ports['bare']}"
    bare_array = f"https://127.0.0.1:{ports['bare_array']}"
    ours = f"https://127.0.0.1:{ports['sealml']}"
    peer = f"http://127.0.0.1:{ports['mlflow']}"
    tls_files = [str(tls.cert), str(tls.key)]
    model_file = str(built["model"])
    commands = {
        "bare": (
            [sys.executable, "-c", BARE_APP, model_file, str(ports["bare"]), *tls_files, "frame"],
            base_env,
            f"{bare}/docs",
            f"{bare}/predict",
        ),
        "bare_array": (
            [sys.executable, "-c", BARE_APP, model_file, str(ports["bare_array"]), *tls_files,
             "array"],
            base_env,
            f"{bare_array}/docs",
            f"{bare_array}/predict",
        ),
        "sealml": (
            [sys.executable, "-m", "sealml", "serve", "income@bench", "--port",
             str(ports["sealml"]), "--cert", tls_files[0], "--key", tls_files[1]],
            sealml_env,
            f"{ours}/readyz",
            f"{ours}/v1/models/income/predict",
        ),
        "mlflow": (
            [str(mlflow_python().parent / "mlflow"), "models", "serve", "-m",
             str(built["mlflow_model"]), "--env-manager", "local", "-h", "127.0.0.1",
             "-p", str(ports["mlflow"])],
            base_env | {"PATH": f"{mlflow_python().parent}{os.pathsep}{os.environ['PATH']}"},
            f"{peer}/ping",
            f"{peer}/invocations",
        ),
    }  # fmt: skip
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    names = list(commands)
    with contextlib.ExitStack() as stack:
        processes = {
            name: stack.enter_context(server(command, env, ready, out / f"{name}.log"))
            for name, (command, env, ready, _) in commands.items()
        }
        for name in names:  # warm up: first requests import and compile lazily
            wrk(commands[name][3], scripts[name], 2, args.connections)
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            order = names[shift:] + names[:shift]
            for name in order:
                before = cpu_seconds(processes[name])
                figures = wrk(commands[name][3], scripts[name], args.seconds, args.connections)
                used = cpu_seconds(processes[name]) - before
                figures["cpu_ms_per_request"] = used / max(figures["requests"], 1) * 1000
                runs[name].append(figures)
    ratios = {
        "sealml_over_bare_rps": [
            s["rps"] / b["rps"] for s, b in zip(runs["sealml"], runs["bare"], strict=True)
        ],
        "sealml_over_mlflow_rps": [
            s["rps"] / m["rps"] for s, m in zip(runs["sealml"], runs["mlflow"], strict=True)
        ],
        "sealml_over_bare_array_rps": [
            s["rps"] / b["rps"] for s, b in zip(runs["sealml"], runs["bare_array"], strict=True)
        ],
    }
    summary = {
        name: {
            key: round(statistics.median(r[key] for r in rounds), 4)
            for key in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")
        }
        | {"errors": sum(int(r["errors"]) for r in rounds)}
        for name, rounds in runs.items()
    }
    throughput = statistics.median(ratios["sealml_over_bare_rps"])
    cpu = summary["bare"]["cpu_ms_per_request"] / summary["sealml"]["cpu_ms_per_request"]
    p99 = summary["sealml"]["p99_ms"] / summary["bare"]["p99_ms"]
    over_mlflow = statistics.median(ratios["sealml_over_mlflow_rps"])
    over_array = statistics.median(ratios["sealml_over_bare_array_rps"])
    cpu_array = (
        summary["bare_array"]["cpu_ms_per_request"] / summary["sealml"]["cpu_ms_per_request"]
    )
    p99_array = summary["sealml"]["p99_ms"] / summary["bare_array"]["p99_ms"]
    mlflow_version = subprocess.run(
        [mlflow_python(), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    report = {
        "benchmark": "serve",
        "setup": {"rounds": args.rounds, "seconds": args.seconds,
                  "connections": args.connections, "cpus": os.cpu_count(), "model": args.model,
                  "load": "wrk -t1, one instance per request", "mlflow": mlflow_version},
        "servers": summary,
        "per_round": {k: [round(v, 3) for v in values] for k, values in ratios.items()},
        "rounds": runs,
        "targets": {
            "throughput_vs_bare": {"median_ratio": round(throughput, 3), "target": 0.85,
                                   "cpu_per_request_ratio": round(cpu, 3),
                                   "met": throughput >= 0.85 and cpu >= 0.85},
            "p99_vs_bare": {"ratio": round(p99, 3), "target": 1.2, "met": p99 <= 1.2},
            "throughput_vs_mlflow": {"median_ratio": round(over_mlflow, 2), "target": 4.0,
                                     "met": over_mlflow >= 4.0},
        },
        "checks_overhead": (  # against a bare app with sealml's own input path
            {
                "throughput_vs_bare_array": round(over_array, 3),
                "cpu_per_request_ratio": round(cpu_array, 3),
                "p99_ratio": round(p99_array, 3),
            }
            if summary["bare_array"]["errors"] == 0
            else "n/a: this model takes a DataFrame, so the array app fails"
        ),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
