"""Running the API under uvicorn: TLS (optionally mutual), one or several workers."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ServeSection
from ..errors import UsageError
from .app import create_app
from .runtime import Runtime
from .target import Target
from .tls import TlsFiles

if TYPE_CHECKING:
    from ..workspace import Workspace

SPEC_ENV = "SEALML_SERVE_SPEC"


@dataclass(frozen=True)
class Listen:
    """Where and how the server listens."""

    host: str
    port: int
    tls: TlsFiles | None  # None only with insecure=True
    insecure: bool = False
    workers: int = 1

    def __post_init__(self) -> None:
        if self.tls is None and not self.insecure:
            raise UsageError(
                "serving needs TLS: give --cert and --key (or serve.tls_cert/tls_key), "
                "--dev-tls, or --insecure-http to serve plain HTTP on purpose"
            )

    @property
    def url(self) -> str:
        scheme = "http" if self.tls is None else "https"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def uvicorn_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "log_config": None,
            "access_log": False,
            "server_header": False,
            "proxy_headers": False,
            "timeout_graceful_shutdown": 10,
        }
        if self.tls is not None:
            for path in (self.tls.cert, self.tls.key):
                if not path.is_file():
                    raise UsageError(f"TLS file {path} does not exist")
            _check_tls_files(self.tls)
            options |= {"ssl_certfile": str(self.tls.cert), "ssl_keyfile": str(self.tls.key)}
            if self.tls.client_ca is not None:
                options |= {
                    "ssl_ca_certs": str(self.tls.client_ca),
                    "ssl_cert_reqs": ssl.CERT_REQUIRED,
                }
        return options


def _check_tls_files(tls: TlsFiles) -> None:
    """Load the TLS files once here, so that a bad one is a clear error before serving."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # A password callback that gives none: an encrypted key fails instead of prompting.
        context.load_cert_chain(tls.cert, tls.key, password=lambda: b"")
    except ssl.SSLError as error:
        raise UsageError(
            f"cannot use the TLS certificate {tls.cert} with the key {tls.key}: not PEM, "
            f"an encrypted key, or a key that does not match ({error.reason or 'unreadable'})"
        ) from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError) as error:
            raise UsageError(
                f"cannot use {tls.client_ca} as the client CA: not a PEM certificate "
                f"({getattr(error, 'reason', None) or error.strerror or 'unreadable'})"
            ) from None


@contextlib.contextmanager
def running(
    workspace: Workspace, target: Target, settings: ServeSection, *, insecure: bool
) -> Iterator[tuple[Runtime, Any]]:
    """A started runtime and its ASGI app; the runtime stops (flushing logs) on exit."""
    runtime = Runtime(workspace, target, settings, insecure=insecure)
    runtime.start()
    try:
        yield runtime, create_app(runtime)
    finally:
        runtime.stop()


def serve(workspace: Workspace, target: Target, settings: ServeSection, listen: Listen) -> None:
    """Serve until interrupted. Raises before binding when the model does not verify."""
    import uvicorn

    if listen.workers > 1:
        _serve_workers(workspace, target, settings, listen)
        return
    with running(workspace, target, settings, insecure=listen.insecure) as (runtime, app):
        runtime.log.write("listening", url=listen.url, mutual_tls=_mutual(listen))
        uvicorn.Server(uvicorn.Config(app, **listen.uvicorn_options())).run()


def _mutual(listen: Listen) -> bool:
    return listen.tls is not None and listen.tls.client_ca is not None


def _serve_workers(
    workspace: Workspace, target: Target, settings: ServeSection, listen: Listen
) -> None:
    """Several worker processes (uvicorn's supervisor): each opens the workspace with the
    same credentials from the environment and verifies the model itself."""
    import uvicorn

    os.environ[SPEC_ENV] = json.dumps(
        {
            "workspace": str(workspace.root),
            "target": str(target),
            "settings": settings.model_dump(mode="json"),
            "insecure": listen.insecure,
        }
    )
    uvicorn.run(
        "sealml.serving.worker:app",
        factory=True,
        workers=listen.workers,
        **listen.uvicorn_options(),
    )


def spec_from_env() -> tuple[Path, Target, ServeSection, bool]:
    spec = json.loads(os.environ[SPEC_ENV])
    return (
        Path(spec["workspace"]),
        Target.parse(spec["target"]),
        ServeSection.model_validate(spec["settings"]),
        bool(spec["insecure"]),
    )
