"""Waits and timeouts of the kubernetes provider, in one place tests can shrink.

Every module reads ``timing.TIMING`` at the moment it waits, never a copy taken at import, so one
``monkeypatch.setattr(timing, "TIMING", Timing(...))`` reaches all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TIMING", "Timing"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Waits and timeouts of the provider (tests shrink them; real clusters need the defaults)."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    poll_min_s: float = 0.05  # readiness polls start fast (a fake or warm cluster is ready soon)
    poll_max_s: float = 2.0  # ... and back off to this
    heartbeat_s: float = 10.0  # repeat an unchanged progress line this often
    delete_wait_s: float = 60.0  # how long to watch a namespace disappear before warning
    interrupted_delete_wait_s: float = 10.0  # the same after Ctrl-C/SIGTERM: the user wants out
    probe_timeout_s: float = 1.0  # TCP probe of a nodePort / port-forward check


TIMING = Timing()
