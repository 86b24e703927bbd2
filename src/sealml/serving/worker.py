"""The app factory each uvicorn worker process calls (``sealml serve --workers N``)."""

from __future__ import annotations

import atexit
from typing import Any

from .app import create_app
from .runtime import Runtime
from .server import spec_from_env


def app() -> Any:
    """Open the workspace with the environment's credentials and serve the model."""
    from ..cli import credentials
    from ..config import CONFIG_NAME, load_config
    from ..workspace import Workspace

    root, target, settings, insecure = spec_from_env()
    config = load_config(root / CONFIG_NAME)
    workspace = Workspace.open(
        root, passphrase=credentials.passphrase_source(root, config.keys.passphrase_file)
    )
    credentials.authenticate(workspace)
    runtime = Runtime(workspace, target, settings, insecure=insecure)
    runtime.start()
    atexit.register(runtime.stop)
    return create_app(runtime)
