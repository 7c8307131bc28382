"""Process plumbing for the engine: stdout kept for protocol lines, quiet logging, fd limit, exit.

stdout carries protocol lines only: :func:`claim_stdout` moves file descriptor 1 aside and points
it at stderr, so a ``print`` in a user's locustfile cannot corrupt the protocol. Locust's logging
goes to stderr at WARNING level, with repeated messages throttled (:func:`setup_logging`).
"""

# isort: off
import locust  # noqa: F401  first, as in every engine module (see perfgate.load.engine)

# isort: on
import logging
import os
import resource
import signal
import sys
from typing import Any

from gevent.fileobject import FileObjectPosix


class _QuietFilter(logging.Filter):
    """Drop Locust's per-step spawn-rate warning and throttle repeated messages."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            first = record.getMessage().split("\n", 1)[0][:200]
        except Exception:
            return True
        if first.startswith("Your selected spawn rate is very high"):
            return False
        n = self._seen.get(first, 0) + 1
        if len(self._seen) < 10_000:
            self._seen[first] = n
        if n <= 3:
            return True
        if n & (n - 1) == 0:  # powers of two: keep a trace of how often it repeats
            record.msg, record.args = f"(repeated {n} times) {first}", None
            record.exc_info = None
            return True
        return False


def setup_logging(level: str) -> None:
    """All logging to stderr at ``level`` (WARNING when unknown), repeated messages throttled."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_QuietFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.WARNING))


def raise_fd_limit() -> None:
    """One socket per user: locust's CLI raises the limit too; a library user must do it itself."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 10_000 if hard == resource.RLIM_INFINITY else min(hard, 10_000)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        pass


def claim_stdout() -> Any:
    """Keep the real stdout for protocol lines; point fd 1 (and sys.stdout) at stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return FileObjectPosix(proto_fd, "wb", close=True)


def exit_now(code: int) -> None:
    """Flush and leave at once: Locust's greenlets and atexit hooks must not delay the exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
