"""The sandbox side of the sandbox executor: ``python -m sealml.pipeline.worker SCRATCH``.

Reads ``task.json`` and ``in/<name>`` from its scratch folder, runs the stage and writes
``out/<name>``; on failure writes one line to ``error.txt`` and exits 3. It sees no secret:
the environment is scrubbed and inputs arrive already decrypted and verified.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import SealmlError
from .execution import LOG, execute_stage
from .loader import load_pipeline


def _limit_memory(mib: int | None) -> None:
    """Cap this process's address space (soft and hard: the stage cannot raise it)."""
    if mib:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))


def main(scratch: Path) -> int:
    try:
        task = json.loads((scratch / "task.json").read_text())
        _limit_memory(task.get("memory_mib"))
        pipeline = load_pipeline(Path(task["pipeline_file"])).pipeline
        stage = next(s for s in pipeline.stages if s.name == task["stage"])
        inputs = {name: (scratch / "in" / name).read_bytes() for name in stage.inputs}
        outputs = execute_stage(
            stage,
            inputs,
            task["params"],
            int(task["threads"]),
            task.get("secrets") or {},
            own_process=True,
        )
        for name, data in outputs.items():
            (scratch / "out" / name).write_bytes(data)
    except SealmlError as error:
        (scratch / "error.txt").write_text(str(error))
        log = getattr(error, "log", "")
        if log:
            (scratch / "out" / LOG).write_text(log, encoding="utf-8")
        return 3
    except Exception as error:
        (scratch / "error.txt").write_text(f"sandbox worker: {type(error).__name__}: {error}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
