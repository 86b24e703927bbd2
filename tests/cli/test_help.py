"""The command listing: each command's summary is its docstring's first line."""

from __future__ import annotations

from typing import Any

import typer.main

from sealml.cli.main import app


def _commands() -> list[tuple[str, Any]]:
    root = typer.main.get_command(app)
    context = root.context_class(root)
    found: list[tuple[str, Any]] = []

    def walk(command: Any, path: str) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(context):
                walk(command.get_command(context, name), f"{path} {name}".strip())
        else:
            found.append((path, command))

    walk(root, "")
    return found


def test_every_command_has_a_one_line_summary() -> None:
    """A summary that runs onto a second line is printed with its line break in the
    listing (``sealml --help``), cutting the sentence in two."""
    commands = _commands()
    assert len(commands) > 40
    for path, command in commands:
        summary = (command.help or "").strip().split("\n\n")[0]
        assert summary, f"sealml {path} has no help"
        assert "\n" not in summary, f"sealml {path}: first paragraph spans lines: {summary!r}"


def test_every_help_page_renders(cli: Any) -> None:
    """Help text is rich markup: a bracket in it (``s3://bucket[/prefix/]``) broke
    ``sealml init --help`` with an internal error."""
    for path, _ in _commands():
        result = cli(*path.split(), "--help")
        assert result.code == 0, f"sealml {path} --help: {result.stderr}"
        assert "Usage:" in result.stdout and "Options" in result.stdout


def test_help_paragraphs_are_reflowed_to_the_terminal() -> None:
    """A line break inside a paragraph is kept by Typer and showed up as a ragged edge
    (`sealml demo --help` broke "watermarked training," over two lines)."""
    for path, command in _commands():
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph.strip(), f"sealml {path}: {paragraph!r}"
