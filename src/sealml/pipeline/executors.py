"""Where a stage runs: in this process, in a sandboxed child process, or on Ray.

Every executor receives verified, serialised inputs and returns serialised outputs; the
runner seals them. The same stage gives the same bytes on every executor, because the
same code (``execute_stage``) decodes, calls and encodes on all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from ..crypto.streaming import StreamingParams, decrypt_bytes, encrypt_bytes
from ..errors import UsageError
from ..urls import is_loopback_host
from .execution import LOG, QUARANTINE, StageFailedError, execute_stage
from .stage import Stage, StageLimits

EXECUTORS = ("local", "sandbox", "ray")
STDERR_TAIL = 1 << 16
_TRANSFER = StreamingParams()


@dataclass(frozen=True)
class StageTask:
    """One stage to run, with everything it needs and nothing more."""

    pipeline_file: Path
    stage: Stage
    inputs: Mapping[str, bytes]
    params: Mapping[str, Any]
    threads: int
    secrets: Mapping[str, Any] = field(default_factory=dict)
    limits: StageLimits = field(default_factory=StageLimits)  # the stage's own, else the defaults


class Executor(Protocol):
    name: str

    def run(self, task: StageTask) -> dict[str, bytes]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs stages in this process."""

    name = "local"

    def run(self, task: StageTask) -> dict[str, bytes]:
        return execute_stage(task.stage, task.inputs, task.params, task.threads, task.secrets)

    def close(self) -> None:
        return None


def _scratch_root() -> str | None:
    """Memory-backed /dev/shm where available, so plaintext inputs never reach a disk."""
    shm = Path("/dev/shm")  # noqa: S108 - a private 0700 folder is created inside
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


class SandboxExecutor:
    """Runs each stage in a child process with no network and a read-only file system
    except its own scratch folder, using bubblewrap. Without bubblewrap, stages run in a
    plain child process (with a scrubbed environment) and stages marked ``isolated`` are
    refused."""

    name = "sandbox"

    def __init__(self, bwrap: str | None = None) -> None:
        self.bwrap = bwrap if bwrap is not None else shutil.which("bwrap")

    @property
    def isolating(self) -> bool:
        return bool(self.bwrap)

    def _command(self, scratch: Path) -> list[str]:
        python = [sys.executable, "-m", "sealml.pipeline.worker", str(scratch)]
        if not self.bwrap:
            return python
        return [
            self.bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--bind", str(scratch), str(scratch),
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop", "ALL",
            "--chdir", str(scratch),
            "--",
            *python,
        ]  # fmt: skip

    def run(self, task: StageTask) -> dict[str, bytes]:
        if task.stage.isolated and not self.isolating:
            raise UsageError(
                f"stage {task.stage.name!r} must run isolated but no sandbox is available "
                "(install bubblewrap)"
            )
        scratch = Path(tempfile.mkdtemp(prefix="sealml-stage-", dir=_scratch_root()))
        try:
            for folder in ("in", "out", "tmp"):
                (scratch / folder).mkdir(mode=0o700)
            for name, data in task.inputs.items():
                (scratch / "in" / name).write_bytes(data)
            task_file = {
                "pipeline_file": str(task.pipeline_file),
                "stage": task.stage.name,
                "params": dict(task.params),
                "threads": task.threads,
                "secrets": dict(task.secrets),
                "memory_mib": task.limits.memory_mib,
            }
            (scratch / "task.json").write_text(json.dumps(task_file))
            environment = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": str(scratch),
                "TMPDIR": str(scratch / "tmp"),
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONNOUSERSITE": "1",
            }
            try:
                returncode, stderr = run_keeping_tail(
                    self._command(scratch), environment, scratch, task.limits.seconds
                )
            except subprocess.TimeoutExpired:
                raise StageFailedError(_stopped(task.stage.name, task.limits.seconds)) from None
            if returncode != 0:
                error = scratch / "error.txt"
                message = error.read_text() if error.exists() else stderr.strip()
                lines = message.strip().splitlines() or [f"exit code {returncode}"]
                log = scratch / "out" / LOG
                raise StageFailedError(
                    lines[-1] if not error.exists() else lines[0],
                    log.read_text("utf-8", "replace") if log.exists() else "",
                )
            produced = {name: (scratch / "out" / name).read_bytes() for name in task.stage.outputs}
            for extra in (QUARANTINE, LOG):
                if (scratch / "out" / extra).exists():
                    produced[extra] = (scratch / "out" / extra).read_bytes()
            return produced
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def close(self) -> None:
        return None


def run_keeping_tail(
    command: list[str], env: Mapping[str, str], cwd: Path, timeout: float | None = None
) -> tuple[int, str]:
    """Run *command* to its end; returns its exit code and the last ``STDERR_TAIL`` bytes
    of its standard error (its standard output is dropped: a stage's own output is in
    its log), so a child that prints without end cannot fill this process's memory.
    After *timeout* seconds its whole process group is killed and TimeoutExpired raised."""
    tail = bytearray()

    def drain(stream: IO[bytes]) -> None:
        while chunk := stream.read(1 << 16):
            tail.extend(chunk)
            del tail[:-STDERR_TAIL]

    with subprocess.Popen(
        command,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, to stop all of it at once
    ) as child:
        assert child.stderr is not None
        reader = threading.Thread(target=drain, args=(child.stderr,), daemon=True)
        reader.start()
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        finally:
            reader.join(timeout=5)
    return code, bytes(tail).decode("utf-8", "replace")


def _stopped(stage: str, seconds: float | None) -> str:
    return f"stage {stage!r} was stopped after its time limit of {seconds:g} s"


def refuse_unenforceable(executor: str, stages: Iterable[Stage]) -> None:
    """Refuse, before anything runs, a stage whose declared limits *executor* cannot
    enforce: none in process (``local``), no memory limit on ``ray`` (workers are shared)."""
    for stage in stages:
        declared = stage.limits
        if executor == "local" and (declared.seconds or declared.memory_mib):
            raise UsageError(
                f"stage {stage.name!r} declares limits the local executor cannot enforce; "
                "run it with --executor sandbox"
            )
        if executor == "ray" and declared.memory_mib:
            raise UsageError(
                f"stage {stage.name!r} declares a memory limit, which only the sandbox "
                "executor enforces; use Ray's memory monitor, or --executor sandbox"
            )


def _transfer_ad(stage: str, name: str, direction: str) -> bytes:
    return f"sealml/ray/v1:{stage}:{direction}:{name}".encode()


def _run_on_ray_worker(
    pipeline_file: str,
    stage_name: str,
    params: dict[str, Any],
    sealed_inputs: dict[str, bytes],
    input_key: bytes,
    output_key: bytes,
    threads: int,
    secrets: dict[str, Any],
) -> dict[str, bytes]:
    """Body of the Ray task: decrypt this task's inputs, run the stage, encrypt outputs."""
    from .loader import load_pipeline

    pipeline = load_pipeline(Path(pipeline_file)).pipeline
    stage = next(s for s in pipeline.stages if s.name == stage_name)
    inputs = {
        name: decrypt_bytes(input_key, _transfer_ad(stage_name, name, "in"), data, _TRANSFER)
        for name, data in sealed_inputs.items()
    }
    outputs = execute_stage(stage, inputs, params, threads, secrets, own_process=True)
    return {
        name: encrypt_bytes(output_key, _transfer_ad(stage_name, name, "out"), data, _TRANSFER)
        for name, data in outputs.items()
    }


_LOCAL_RAY = (None, "", "local", "auto")  # a new local cluster, or the one on this machine


def remote_without_tls(address: str | None, environ: Mapping[str, str]) -> bool:
    """Whether Ray would be reached at a host other than this one (the given address, else
    ``RAY_ADDRESS``) while Ray's TLS is off."""
    target = address or environ.get("RAY_ADDRESS")
    if target in _LOCAL_RAY:
        return False
    if environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true"):
        return False
    host = urlsplit(target if "://" in str(target) else f"ray://{target}").hostname
    return not (host and is_loopback_host(host))


class RayExecutor:
    """Runs each stage as a Ray task (``ray.init()`` locally, or the configured address).

    Inputs and outputs cross Ray's object store only encrypted, under fresh keys made for
    that one task; artifact data keys never leave this process. The task arguments (which
    carry the two task keys) travel over Ray's control connections, so a cluster beyond
    this machine is used only with Ray's TLS on (``RAY_USE_TLS=1``).
    """

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        if remote_without_tls(address, os.environ):
            raise UsageError(
                "the Ray cluster is not on this machine and Ray's TLS is off: task keys would "
                "cross the network in clear; set RAY_USE_TLS=1 with RAY_TLS_SERVER_CERT, "
                "RAY_TLS_SERVER_KEY and RAY_TLS_CA_CERT on every node"
            )
        try:
            import ray
        except ImportError:
            raise UsageError("the ray executor needs `pip install sealml[ray]`") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            ray.init(
                address=address or None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._started = True
        self._task = ray.remote(_run_on_ray_worker)

    def run(self, task: StageTask) -> dict[str, bytes]:
        input_key, output_key = os.urandom(32), os.urandom(32)
        sealed = {
            name: encrypt_bytes(
                input_key, _transfer_ad(task.stage.name, name, "in"), data, _TRANSFER
            )
            for name, data in task.inputs.items()
        }
        reference = self._task.remote(
            str(task.pipeline_file),
            task.stage.name,
            dict(task.params),
            sealed,
            input_key,
            output_key,
            task.threads,
            dict(task.secrets),
        )
        try:
            results: dict[str, bytes] = self._ray.get(reference, timeout=task.limits.seconds)
        except self._ray.exceptions.GetTimeoutError:
            self._ray.cancel(reference, force=True)
            raise StageFailedError(_stopped(task.stage.name, task.limits.seconds)) from None
        except self._ray.exceptions.RayTaskError as error:
            cause = error.cause if isinstance(error.cause, Exception) else error
            if isinstance(cause, UsageError):
                raise StageFailedError(str(cause), getattr(cause, "log", "")) from None
            message = f"stage {task.stage.name!r} failed on Ray: {type(cause).__name__}: {cause}"
            raise StageFailedError(message.splitlines()[0]) from None
        return {
            name: decrypt_bytes(
                output_key, _transfer_ad(task.stage.name, name, "out"), data, _TRANSFER
            )
            for name, data in results.items()
        }

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(name: str, ray_address: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "sandbox":
        return SandboxExecutor()
    if name == "ray":
        return RayExecutor(ray_address)
    raise UsageError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
