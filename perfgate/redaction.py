"""What perfgate treats as a secret, and how its outputs hide one: the one place for both rules.

The rules are written for users in docs/failures.md ("Secrets"); this module implements them.

A secret is

1. every value substituted for ``${VAR}`` in the scenario's ``users`` section (paths, params,
   JSON bodies, header values), whatever its length;
2. the whole value of an authorization-like header (:func:`is_secret_header`): ``Authorization``,
   ``Proxy-Authorization``, ``Cookie``, ``X-Api-Key``, and every header whose name ends in
   ``-token``/``-key`` or contains ``secret``, ``password`` or ``token``;
3. the whole value of a header written ``{value: ..., secret: true}``;
4. the password of a ``--target`` / ``--baseline-target`` URL (:func:`url_password`), also of a
   URL Python cannot parse.

Any other header value (``Accept: application/json``, ``X-Tenant: 7``) is data and shown as is.

How outputs hide a secret:

- Records (result.json's record, baselines, the history) are redacted field by field *before*
  anything is serialised (:func:`redact_record`): in free-text string fields every occurrence
  is replaced by ``***``. Numbers, booleans, enumerations (verdict, mode, phase, ...) and the
  identity fields (scenario and release names, timestamps, version, fingerprint, file paths) are
  never touched, so serialised JSON, XML and CSV stay valid and the baseline file and report
  folder are named from the real names. Serialised text is never searched and replaced.
- Free text (error messages, the load engine's stderr, progress lines) goes through
  :func:`redact_text`.
- A secret shorter than 4 characters is replaced only where it stands alone (not next to a
  letter, digit or ``_``): ``${N}`` = ``7`` hides ``/work/7`` but leaves ``1747 req/s`` alone.
- URLs lose their password by structure (``user:***@host``), see :func:`redact_url`.

Standard library and the records only: every stage may import it (it is not a stage).
"""

from __future__ import annotations

import dataclasses
import re
import typing
import urllib.parse
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

__all__ = [
    "REDACTED",
    "is_secret_header",
    "ordered",
    "redact_record",
    "redact_text",
    "redact_url",
    "url_password",
]

REDACTED = "***"
SHORT = 4  # secrets shorter than this are replaced only where they stand alone

_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "apikey"}
)
_SECRET_HEADER_PARTS = ("secret", "password", "token")
_SECRET_HEADER_ENDINGS = ("-token", "-key", "_token", "_key")

# Fields that name things (paths are computed from them) or identify a run: never redacted.
IDENTITY_FIELDS = frozenset(
    {
        "scenario",
        "release",
        "path",
        "fingerprint",
        "perfgate_version",
        "schema",
        "started_at",
        "finished_at",
        "created_at",
        "measured_at",
    }
)

# scheme://userinfo@ — found by text, so that a URL urllib refuses still loses its password
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#]*)@")

R = TypeVar("R")


def is_secret_header(name: str) -> bool:
    """Whether a header's whole value is a secret because of its name (rule 2)."""
    low = name.lower()
    return (
        low in _SECRET_HEADERS
        or low.endswith(_SECRET_HEADER_ENDINGS)
        or any(part in low for part in _SECRET_HEADER_PARTS)
    )


def ordered(secrets: Iterable[str]) -> tuple[str, ...]:
    """Distinct, non-empty secrets, longest first (a secret inside another is replaced whole).

    A value made only of ``*`` is dropped: it cannot be told from the redaction mark.
    """
    return tuple(sorted({s for s in secrets if s and s.strip("*")}, key=lambda s: (-len(s), s)))


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (short ones only where they stand alone)."""
    for secret in secrets if isinstance(secrets, tuple) else ordered(secrets):
        if secret not in text:
            continue
        if len(secret) >= SHORT:
            text = text.replace(secret, REDACTED)
        else:
            text = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", REDACTED, text)
    return text


def redact_record(record: R, secrets: Iterable[str]) -> R:
    """A copy of the frozen record ``record`` with its free-text fields redacted (see above)."""
    found = ordered(secrets)
    if not found:
        return record
    return typing.cast(R, _walk(record, found))


def _walk(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact_text(value, secrets)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = _hints(type(value))
        changes = {
            f.name: _walk(getattr(value, f.name), secrets)
            for f in dataclasses.fields(value)
            if f.name not in IDENTITY_FIELDS and not _is_literal(hints[f.name])
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        return tuple(_walk(v, secrets) for v in value)
    if isinstance(value, list):
        return [_walk(v, secrets) for v in value]
    if isinstance(value, dict):
        # keys are the code's own names (diagnostics, recipes); values are data
        return {k: v if k in IDENTITY_FIELDS else _walk(v, secrets) for k, v in value.items()}
    return value  # numbers, booleans, None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _is_literal(tp: Any) -> bool:
    if typing.get_origin(tp) is Literal:
        return True
    return any(typing.get_origin(a) is Literal for a in typing.get_args(tp))


def url_password(url: str) -> str | None:
    """The password in ``url``'s user info, or None; works on URLs urllib cannot parse too."""
    match = _USERINFO.match(url.strip())
    if match is None:
        return None
    _, sep, password = match.group("info").partition(":")
    return urllib.parse.unquote(password) if sep and password else None


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``user:***@host``), for messages and reports.

    The user info is found by text, so a malformed URL (say ``http://u:pw@[::1:80``) is
    redacted too instead of raising while its error is being reported.
    """
    text = url.strip()
    match = _USERINFO.match(text)
    if match is None:
        return url
    user, sep, password = match.group("info").partition(":")
    if not (sep and password):
        return url
    return f"{match.group('head')}{user}:{REDACTED}@{text[match.end() :]}"
