"""The sealing process behind :class:`sealml.pipeline.background.ProcessWriter`:
``python -m sealml.pipeline.writer CALLS_FD REPLIES_FD``.

It reads calls from one inherited pipe and answers on the other; what it does is up to
the service its parent names in the first message. It exits when the calls pipe closes.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection

from .background import serve


def main(calls_fd: int, replies_fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    calls = Connection(calls_fd, writable=False)
    replies = Connection(replies_fd, readable=False)
    try:
        serve(calls, replies)
    except (EOFError, OSError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
