"""``python -m sealml`` runs the command line."""

from .cli.main import run

run()
