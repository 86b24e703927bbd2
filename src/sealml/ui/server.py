"""Running the dashboard under uvicorn."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..serving.server import Listen
from ..urls import is_loopback_host
from .app import UiSettings, create_dashboard

if TYPE_CHECKING:
    from ..workspace import Workspace

_ANY_ADDRESS = ("0.0.0.0", "::")  # noqa: S104 (names, compared against, not bound)


def allowed_hosts(host: str) -> tuple[str, ...]:
    """Host headers the dashboard answers to: the address it listens on (and, on loopback,
    the loopback names), so a page on another site that re-points its own name at this
    address (DNS rebinding) is refused. Listening on every address allows every name."""
    if host in _ANY_ADDRESS:
        return ("*",)
    if is_loopback_host(host):
        return tuple(dict.fromkeys([host, "localhost", "127.0.0.1", "[::1]"]))
    return (host,)


def run(workspace: Workspace, listen: Listen, idle_minutes: int, workers: int = 4) -> None:
    """Serve the dashboard until interrupted."""
    import uvicorn

    settings = UiSettings(
        secure=listen.tls is not None,
        allowed_hosts=allowed_hosts(listen.host),
        idle_minutes=idle_minutes,
        lifetime_minutes=workspace.config.access.session_ttl_minutes,
        workers=workers,
    )
    app = create_dashboard(workspace, settings)
    uvicorn.Server(uvicorn.Config(app, **listen.uvicorn_options())).run()
