"""The load stage: Locust in a child process, measured one load level at a time.

- :mod:`perfgate.load.runner` — :class:`LocustRunner`, the parent side (the ``StepRunner`` of
  docs/ARCHITECTURE.md). It never imports locust.
- :mod:`perfgate.load.engine` — the child process (``python -m perfgate.load.engine``); it and
  the ``engine_*`` modules it imports (session, steps, runners, record, users, process) are the
  only modules that import locust.
- :mod:`perfgate.load.protocol` — the JSON-lines messages between them.
- :mod:`perfgate.histogram` — the mergeable log-bucketed latency histogram.
- :mod:`perfgate.load.templates` — ``{{ expr }}`` request templates, compiled once.

This ``__init__`` imports nothing: ``python -m perfgate.load.engine`` runs it before the engine's
own first line, which must be ``import locust``. ``LocustRunner`` is loaded on first access.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perfgate.load.runner import LocustRunner

__all__ = ["LocustRunner"]


def __getattr__(name: str) -> Any:
    if name == "LocustRunner":
        from perfgate.load.runner import LocustRunner

        return LocustRunner
    raise AttributeError(f"module 'perfgate.load' has no attribute {name!r}")
