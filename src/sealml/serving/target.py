"""What a server or a monitoring command is pointed at: ``NAME[@ALIAS|@VERSION]``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """What to serve: a model name and an alias or version number."""

    name: str
    ref: str

    @classmethod
    def parse(cls, text: str) -> Target:
        name, _, ref = text.partition("@")
        return cls(name.strip(), ref.strip() or "production")

    def __str__(self) -> str:
        return f"{self.name}@{self.ref}"
