"""Model-file scanners compared: sealml, picklescan, modelscan and fickling, same run.

Each tool scans (1) every file of the test corpus (tests/models/corpus.py: malicious files
with distinct techniques and real benign model files), (2) the whole corpus folder, and
(3) a 1 GiB benign pickle (a dict of float64 arrays, protocol 4). Every tool runs in its own
virtual environment and process, through a small driver that calls its Python API and times
the scan itself (interpreter start-up and imports are not counted, for anyone).

A file counts as flagged when the tool reports any issue (sealml: any verdict but ``safe``).
Malicious files not flagged are misses (an error on a malicious file is also a miss, and is
counted under errors too); benign files flagged are false positives.

Peer environments are created on first use under ``bench/out/peers`` with the pins their
current releases need: picklescan needs numpy beside it; modelscan 0.8.8 fails on every
``.npy`` with NumPy 2.4 (NumPy < 2.3 in its venv); fickling 0.1.12 needs typing_extensions.

Usage: python bench/scan.py [--large-gib 1] [--peers DIR] [--repeat 3]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.models.corpus import benign, malicious, write  # noqa: E402

PEERS = {
    "picklescan": ["picklescan>=1.0.5", "numpy"],
    "modelscan": ["modelscan>=0.8.8", "numpy<2.3"],
    "fickling": ["fickling>=0.1.12", "typing_extensions"],
}

# Runs inside each tool's interpreter: argv = tool, mode (files|folder), JSON list of paths.
DRIVER = r"""
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
tool, mode, paths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

if tool == "sealml":
    from sealml.models.scanner import scan_path
    from pathlib import Path
    def check(path):
        return scan_path(Path(path)).verdict != "safe", None
elif tool == "picklescan":
    from picklescan.scanner import scan_directory_path, scan_file_path
    def check(path):
        scan = scan_directory_path if os.path.isdir(path) else scan_file_path
        result = scan(path)
        flagged = result.infected_files > 0 or result.issues_count > 0
        return flagged, ("scan error" if result.scan_err and not flagged else None)
elif tool == "modelscan":
    import logging
    logging.disable(logging.CRITICAL)
    from modelscan.modelscan import ModelScan
    def check(path):
        result = ModelScan().scan(path)
        flagged = bool(result.get("issues"))
        errors = result.get("errors") or []
        return flagged, (str(errors[0])[:80] if errors and not flagged else None)
elif tool == "fickling":
    import fickling
    def check(path):
        if os.path.isdir(path):
            flagged = False
            for base, _, names in os.walk(path):
                for name in names:
                    flagged |= not fickling.is_likely_safe(os.path.join(base, name))
            return flagged, None
        return not fickling.is_likely_safe(path), None

results = []
for path in paths:
    start = time.perf_counter()
    try:
        flagged, error = check(path)
    except BaseException as exc:  # a crash is an error, never a verdict
        flagged, error = False, f"{type(exc).__name__}: {str(exc)[:80]}"
    results.append({"path": path, "flagged": bool(flagged), "error": error,
                    "seconds": time.perf_counter() - start})
print(json.dumps(results))
"""


def peer_python(tool: str, peers: Path) -> Path:
    """The interpreter of *tool*'s own venv, created (and installed) if missing."""
    home = peers / tool
    python = home / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PEERS[tool]],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return python


def drive(python: Path, tool: str, mode: str, paths: list[Path], timeout: float) -> list[Any]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [str(python), "-c", DRIVER, tool, mode, json.dumps([str(p) for p in paths])],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return [{"path": str(p), "flagged": False, "error": "timeout", "seconds": timeout}
                for p in paths]  # fmt: skip
    if done.returncode != 0 or not done.stdout.strip():
        error = (done.stderr.strip().splitlines() or ["no output"])[-1][:100]
        return [{"path": str(p), "flagged": False, "error": error, "seconds": 0.0} for p in paths]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def make_large(path: Path, gib: float) -> int:
    """A benign pickle of *gib* GiB: a dict of 16 MiB float64 arrays, protocol 4."""
    import numpy

    target = int(gib * (1 << 30))
    if path.exists() and path.stat().st_size >= target:
        return path.stat().st_size
    rng = numpy.random.default_rng(0)
    chunk = 2 << 20  # float64 elements per array: 16 MiB
    arrays = {f"layer_{i}.weight": rng.standard_normal(chunk) for i in range(target // (chunk * 8))}
    with path.open("wb") as handle:
        pickle.dump(arrays, handle, protocol=4)
    return path.stat().st_size


def tally(results: list[Any], bad: set[str]) -> dict[str, Any]:
    missed = sorted(Path(r["path"]).name for r in results if r["path"] in bad and not r["flagged"])
    false = sorted(Path(r["path"]).name for r in results if r["path"] not in bad and r["flagged"])
    errors = sorted(Path(r["path"]).name for r in results if r["error"])
    return {
        "detections": sum(1 for r in results if r["path"] in bad and r["flagged"]),
        "misses": len(missed),
        "false_positives": len(false),
        "errors": len(errors),
        "missed": missed,
        "false_positive_files": false,
        "error_files": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-gib", type=float, default=1.0)
    parser.add_argument("--peers", type=Path, default=ROOT / "bench" / "out" / "peers")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    work = ROOT / "bench" / "out" / "scan"
    corpus = work / "corpus"
    bad = set(map(str, write(corpus / "malicious", malicious())))
    good = write(corpus / "benign", benign())
    files = sorted(map(Path, bad)) + good
    large = work / "large.pkl"
    large_size = make_large(large, args.large_gib)

    pythons = {"sealml": Path(sys.executable)}
    for tool in PEERS:
        pythons[tool] = peer_python(tool, args.peers)
    report: dict[str, Any] = {
        "corpus": {"malicious": len(bad), "benign": len(good)},
        "large_file_bytes": large_size,
        "tools": {},
    }
    # Repeats go round the tools (not tool after tool), so a noisy spell of the machine
    # falls on every tool alike; each figure is the best of its repeats.
    folders: dict[str, list[Any]] = {tool: [] for tool in pythons}
    bigs: dict[str, list[Any]] = {tool: [] for tool in pythons}
    for _ in range(args.repeat):
        for tool, python in pythons.items():
            folders[tool].append(drive(python, tool, "folder", [corpus], args.timeout)[0])
            bigs[tool].append(drive(python, tool, "files", [large], args.timeout)[0])
    for tool, python in pythons.items():
        per_file = drive(python, tool, "files", files, args.timeout)
        folder = min(folders[tool], key=lambda r: r["seconds"])
        best = min(bigs[tool], key=lambda r: r["seconds"])
        report["tools"][tool] = {
            **tally(per_file, bad),
            "folder_scan_seconds": round(folder["seconds"], 4),
            "folder_scan_median_seconds": round(
                sorted(r["seconds"] for r in folders[tool])[len(folders[tool]) // 2], 4
            ),
            "folder_scan_error": folder["error"],
            "files_scanned_without_error": len(files) - sum(1 for r in per_file if r["error"]),
            "large_file": {
                "seconds": round(best["seconds"], 4),
                "mb_per_s": round(large_size / 1e6 / best["seconds"], 1)
                if best["seconds"]
                else None,
                "flagged": best["flagged"],
                "error": best["error"],
            },
        }
    tools = report["tools"]
    ours = tools["sealml"]
    peers = {k: v for k, v in tools.items() if k != "sealml"}
    fastest = max(peers, key=lambda k: peers[k]["large_file"]["mb_per_s"] or 0)
    report["targets"] = {
        "sealml_no_misses": ours["misses"] == 0,
        "sealml_no_false_positives": ours["false_positives"] == 0,
        "every_peer_misses_or_flags_benign": all(
            v["misses"] > 0 or v["false_positives"] > 0 for v in peers.values()
        ),
        "large_file_vs_fastest_peer": {
            "peer": fastest,
            "ratio": round(
                (ours["large_file"]["mb_per_s"] or 0)
                / (peers[fastest]["large_file"]["mb_per_s"] or 1),
                2,
            ),
        },
        # a folder scan that crashed is not a scan time
        "folder_scan_fastest": all(
            ours["folder_scan_seconds"] < v["folder_scan_seconds"]
            for v in peers.values()
            if v["folder_scan_error"] is None
        ),
        "folder_scan_fastest_by_median": all(
            ours["folder_scan_median_seconds"] < v["folder_scan_median_seconds"]
            for v in peers.values()
            if v["folder_scan_error"] is None
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
