"""What a stage prints, warns and logs while it runs, kept for the run's records.

The text is bounded (a stage that prints without end cannot fill memory), the values of the
secrets the stage was given are blanked out, and the runner seals it as the stage's log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterable, Iterator

MAX_LOG_CHARS = 1 << 20
_FORMAT = "%(levelname)s %(name)s: %(message)s"


class BoundedText(io.TextIOBase):
    """A text sink that keeps the first *limit* characters and counts the rest."""

    def __init__(self, limit: int = MAX_LOG_CHARS) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = max(self.limit - self._kept, 0)
        kept = text[:room]
        if kept:
            self._parts.append(kept)
            self._kept += len(kept)
        self.dropped += len(text) - len(kept)
        return len(text)

    def text(self, secrets: Iterable[str] = ()) -> str:
        """What was written, secrets blanked, with a note when some was dropped."""
        found = "".join(self._parts)
        for secret in secrets:
            if len(secret) >= 4:  # shorter values would blank ordinary text
                found = found.replace(secret, "***")
        if self.dropped:
            found += f"\n[sealml: {self.dropped} more characters were not kept]\n"
        return found


@contextlib.contextmanager
def captured(limit: int = MAX_LOG_CHARS) -> Iterator[BoundedText]:
    """Capture ``print`` (stdout and stderr), warnings and ``logging`` records of INFO and
    above while the block runs."""
    sink = BoundedText(limit)
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        with (
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            warnings.catch_warnings(record=True) as caught,  # the filters in force still apply
        ):
            try:
                yield sink
            finally:
                for warning in caught:
                    sink.write(
                        warnings.formatwarning(
                            warning.message, warning.category, warning.filename, warning.lineno
                        )
                    )
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
