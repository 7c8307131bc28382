"""Environment fingerprints: where a run was measured, and whether two runs can be compared."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from urllib.parse import urlsplit

from perfgate._version import __version__
from perfgate.models import Fingerprint, Scenario, Slo, to_jsonable

__all__ = [
    "comparability",
    "fingerprint",
    "fingerprint_id",
    "same_scenario",
    "scenario_change_text",
    "scenario_changes",
    "slo_text",
]

SHOWN_CHANGES = 6  # keys named in a one-line message; the rest are counted

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


def slo_text(slo: Slo) -> str:
    """The SLO as the short string fingerprints compare."""
    text = f"p95<={slo.p95_ms:g}ms errors<={slo.error_rate:g}"
    if slo.event_p95_ms is not None:
        text += f" event_p95<={slo.event_p95_ms:g}ms"
    if slo.event_loss_rate is not None:
        text += f" event_loss<={slo.event_loss_rate:g}"
    return text


def fingerprint(scenario: Scenario, *, provider: str, target: str) -> Fingerprint:
    """The environment a run is measured in, without secrets (no URL credentials, path or query)."""
    return Fingerprint(
        scenario_hash=scenario.content_hash,
        slo=slo_text(scenario.slo),
        perfgate_version=__version__,
        cpu_count=_cpu_count(),
        provider=provider,
        target=_target_kind(provider, target),
        python=platform.python_version(),
        machine=platform.machine(),
        scenario=dict(scenario.identity),
    )


def _cpu_count() -> int:
    # The cores this process may use (cgroup cpusets), not the host's.
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _target_kind(provider: str, target: str) -> str:
    """``embedded``/``kubernetes``, or ``scheme://host`` of a URL (loopback folded to one name)."""
    if provider in ("embedded", "kubernetes"):
        # Their URLs change every run (free port, fresh namespace): the kind is what matters.
        return provider
    if not target:
        return ""
    try:
        parts = urlsplit(target)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "url"
    if not host:
        return "url"
    if host in _LOOPBACK_HOSTS or host.startswith("127."):
        host = "loopback"
    return f"{parts.scheme or 'http'}://{host}"


def fingerprint_id(fp: Fingerprint | None) -> str:
    """A short hash of a fingerprint, to spot at a glance which baselines share an environment."""
    if fp is None:
        return "-"
    data = to_jsonable(fp)
    data.pop("scenario", None)  # the hash stands for it; older fingerprints do not have it
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def comparability(a: Fingerprint | None, b: Fingerprint | None) -> tuple[bool, str]:
    """Whether runs measured in fingerprints ``a`` and ``b`` can be compared, and what differs.

    Not comparable: scenario hash, SLO, CPU count, provider, machine architecture, or perfgate
    major.minor version differ. Only noted: perfgate patch version, Python version, target host.
    A missing fingerprint (older file) is comparable with a note: nothing can be checked.
    """
    if a is None or b is None:
        which = (
            "either" if a is None and b is None else ("the first" if a is None else "the second")
        )
        return True, f"no fingerprint recorded for {which}: environment not checked"
    blocking: list[str] = []
    notes: list[str] = []

    def change(label: str, x: object, y: object) -> str:
        return f"{label} {x} → {y}"

    if a.scenario_hash != b.scenario_hash:
        blocking.append(scenario_change_text(a, b))
    if a.slo != b.slo:
        blocking.append(change("SLO", a.slo, b.slo))
    if a.cpu_count != b.cpu_count:
        blocking.append(change("cpu_count", a.cpu_count, b.cpu_count))
    if a.provider != b.provider:
        blocking.append(change("provider", a.provider or "?", b.provider or "?"))
    if a.machine != b.machine:
        blocking.append(change("machine", a.machine or "?", b.machine or "?"))
    if a.perfgate_version != b.perfgate_version:
        text = change("perfgate", a.perfgate_version, b.perfgate_version)
        major_minor_differs = _major_minor(a.perfgate_version) != _major_minor(b.perfgate_version)
        (blocking if major_minor_differs else notes).append(text)
    if a.python != b.python:
        notes.append(change("python", a.python or "?", b.python or "?"))
    if a.target != b.target:
        notes.append(change("target", a.target or "?", b.target or "?"))
    if blocking:
        return False, "not comparable: " + ", ".join(blocking + notes)
    if notes:
        return True, "comparable; differs in " + ", ".join(notes)
    return True, ""


def same_scenario(old: Fingerprint | None, new: Fingerprint | None) -> bool:
    """Whether two fingerprints were measured with the same scenario (hash and SLO)."""
    if old is None or new is None:
        return True  # nothing recorded: nothing to say
    return old.scenario_hash == new.scenario_hash and old.slo == new.slo


def scenario_changes(old: Fingerprint, new: Fingerprint) -> tuple[tuple[str, str, str], ...]:
    """The scenario keys that differ, ``(key, old value, new value)``, in key order.

    ``"-"`` stands for a key that is absent on one side. Empty when either fingerprint predates
    per-key records (then only the hashes can be compared).
    """
    if not old.scenario or not new.scenario:
        return ()
    keys = sorted(set(old.scenario) | set(new.scenario))
    return tuple(
        (k, old.scenario.get(k, "-"), new.scenario.get(k, "-"))
        for k in keys
        if old.scenario.get(k) != new.scenario.get(k)
    )


def scenario_change_text(old: Fingerprint, new: Fingerprint) -> str:
    """``scenario changed: ramp.max_users 600 → 800, …`` (or the hashes, for old records)."""
    changes = scenario_changes(old, new)
    if not changes:
        return f"scenario changed (hash {old.scenario_hash[:12]} → {new.scenario_hash[:12]})"
    shown = [f"{k} {a} → {b}" for k, a, b in changes[:SHOWN_CHANGES]]
    more = len(changes) - SHOWN_CHANGES
    return (
        "scenario changed: " + ", ".join(shown) + (f" and {more} more key(s)" if more > 0 else "")
    )
