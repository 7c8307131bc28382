"""The scenario's ``users.streams`` section (event subscriptions), validated into a StreamSpec.

Part of the config stage (:mod:`perfgate.scenario` calls :func:`parse_streams`); kept apart so the
scenario module stays within its size. See docs/events.md for the section's meaning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from perfgate.models import RequestSpec, StreamExpect, StreamSpec

Fail = Callable[[str, str], Exception]

_STREAM_KEYS = {"url", "subscribe", "expect", "timeout_s", "connect_timeout_s", "wait"}
_EXPECT_KEYS = {"request", "id", "event_id", "match"}
MAX_TIMEOUT_S = 600.0


def parse_streams(value: Any, requests: tuple[RequestSpec, ...], fail: Fail) -> StreamSpec:
    """``users.streams`` → StreamSpec; ``fail(key, message)`` builds the ScenarioError."""
    key = "users.streams"
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - _STREAM_KEYS)
    if unknown:
        raise fail(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_STREAM_KEYS))})")
    url = value.get("url")
    if not isinstance(url, str) or not url.strip():
        raise fail(f"{key}.url", "required: a path on the target (e.g. /events) or a ws:// URL")
    if not (url.startswith("/") or url.startswith(("ws://", "wss://"))):
        raise fail(f"{key}.url", f"{url!r}: must start with '/', ws:// or wss://")
    if any(ch in url for ch in "\r\n\t "):
        raise fail(f"{key}.url", "must not contain spaces or line breaks")
    expects = value.get("expect", [])
    if not isinstance(expects, list) or not expects:
        raise fail(f"{key}.expect", "required: a list of {request, id, event_id} to correlate")
    names = {r.name for r in requests}
    parsed = tuple(_expect(e, f"{key}.expect[{i}]", names, fail) for i, e in enumerate(expects))
    seen = [e.request for e in parsed]
    for i, name in enumerate(seen):
        if name in seen[:i]:
            raise fail(f"{key}.expect[{i}].request", f"{name!r} is awaited twice")
    wait = value.get("wait", False)
    if not isinstance(wait, bool):
        raise fail(f"{key}.wait", f"expected true or false, got {wait!r}")
    return StreamSpec(
        url=url,
        wait=wait,
        subscribe=value.get("subscribe"),
        expect=parsed,
        timeout_s=_seconds(value, "timeout_s", 5.0, key, fail),
        connect_timeout_s=_seconds(value, "connect_timeout_s", 5.0, key, fail),
    )


def _expect(e: Any, key: str, names: set[str], fail: Fail) -> StreamExpect:
    if not isinstance(e, dict):
        raise fail(key, f"expected a mapping, got {type(e).__name__}")
    unknown = sorted(set(e) - _EXPECT_KEYS)
    if unknown:
        raise fail(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_EXPECT_KEYS))})")
    for field in ("request", "id", "event_id"):
        if not isinstance(e.get(field), str) or not e[field]:
            raise fail(f"{key}.{field}", "required: a non-empty string")
    if e["request"] not in names:
        raise fail(
            f"{key}.request",
            f"{e['request']!r} is not a request of users.requests ({', '.join(sorted(names))})",
        )
    match = e.get("match")
    if match is not None and (
        not isinstance(match, dict) or not all(isinstance(k, str) for k in match)
    ):
        raise fail(f"{key}.match", "expected a mapping of event JSON paths to values")
    return StreamExpect(request=e["request"], id=e["id"], event_id=e["event_id"], match=match)


def _seconds(d: dict[str, Any], name: str, default: float, key: str, fail: Fail) -> float:
    value = d.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(f"{key}.{name}", f"expected a number of seconds, got {value!r}")
    if not 0 < value <= MAX_TIMEOUT_S:
        raise fail(f"{key}.{name}", f"must be > 0 and <= {MAX_TIMEOUT_S:g}, got {value}")
    return float(value)
