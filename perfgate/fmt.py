"""Numbers as people read them: the one place that decides how users, req/s, ms, rates, margins,
changes and the saturation point are written, so the console, the report, the baseline commands
and the verdict's reasons show the same number the same way.

Pure functions of plain values, standard library only: every stage may import this module (it is
not a stage). A missing value (``None`` or NaN) is always written ``MISSING``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "MISSING",
    "change",
    "interval",
    "margin",
    "ms",
    "percent",
    "printable",
    "quantity",
    "rate",
    "rps",
    "saturation",
    "saturation_users",
    "share",
    "signed",
    "small_ms",
    "users",
    "value",
]

MISSING = "–"

# C0 controls, DEL and C1 controls: terminal escapes (ESC [2J), bells, carriage returns and line
# breaks that would start a CI workflow command (``::warning::``) or rewrite a log line. Request
# names and error messages are data, never commands.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """One line of ``text`` with every control character shown as ``\\xNN`` (console, Markdown)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


class SaturationLike(Protocol):
    """What :func:`saturation_users` reads (``perfgate.models.Saturation`` has it)."""

    @property
    def users(self) -> float | None: ...
    @property
    def throughput_rps(self) -> float | None: ...
    @property
    def broken(self) -> bool: ...
    @property
    def censored(self) -> str: ...
    @property
    def users_ci(self) -> tuple[float, float] | None: ...


def _missing(x: float | None) -> bool:
    return x is None or x != x


def value(x: float | None) -> str:
    """A rule's value or threshold: integers as such, otherwise 4 significant digits."""
    if x is None or x != x:
        return MISSING
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.4g}"


def signed(x: float | None, formatter: Callable[[float | None], str] = value) -> str:
    """``x`` with its sign always shown (``+12``, ``-3.5``): a margin or a difference."""
    if x is None or x != x:
        return MISSING
    return ("+" if x >= 0 else "-") + formatter(abs(x))


def margin(x: float | None) -> str:
    """A rule's margin with its sign: + is room left, - is by how much it was missed."""
    return signed(x, value)


def ms(x: float | None) -> str:
    """Milliseconds: one decimal below 10 ms, none above (``3.2``, ``312``)."""
    if x is None or x != x:
        return MISSING
    return f"{x:.1f}" if abs(x) < 10 else f"{x:.0f}"


def small_ms(x: float | None) -> str:
    """Milliseconds that are often below one (CPU per request): two significant digits below
    10 ms (``0.43``, ``2.1``), none above."""
    if x is None or x != x:
        return MISSING
    return f"{x:.2g}" if abs(x) < 10 else f"{x:.0f}"


def event_slo(event_p95_ms: float | None, event_loss_rate: float | None) -> str:
    """The event SLO in words ("Event SLO: p95 ≤ 400 ms, loss ≤ 1 %"); "" when there is none."""
    parts = [f"p95 ≤ {ms(event_p95_ms)} ms"] if event_p95_ms is not None else []
    if event_loss_rate is not None:
        parts.append(f"loss ≤ {rate(event_loss_rate)}")
    return f"Event SLO: {', '.join(parts)}" if parts else ""


def rps(x: float | None) -> str:
    """Requests per second: one decimal below 100, none above (``42.5``, ``388``)."""
    if x is None or x != x:
        return MISSING
    return f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def rate(x: float | None) -> str:
    """An error rate (fraction) as a percentage with 3 significant digits: '1 %', '0.25 %'."""
    if x is None or x != x:
        return MISSING
    pct = x * 100
    if pct == 0:
        return "0 %"
    return f"{pct:.3g} %" if pct < 100 else f"{pct:.0f} %"


def size(n_bytes: float | None) -> str:
    """A byte count in decimal units, 3 significant digits: ``812 B``, ``1.25 MB``."""
    if n_bytes is None or n_bytes != n_bytes:
        return MISSING
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def users(x: float | None) -> str:
    """A users count: whole numbers as such, interpolated ones with one decimal (``114.2``)."""
    if x is None or x != x:
        return MISSING
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def percent(pct: float | None) -> str:
    """An already computed relative change in percent, signed: ``+25.0 %``."""
    if pct is None or pct != pct:
        return MISSING
    return f"{pct:+.1f} %"


def change(new: float | None, old: float | None) -> str:
    """Relative change of ``new`` against ``old``, e.g. '-12.3 %' (missing when old is 0)."""
    if _missing(new) or _missing(old) or old == 0:
        return MISSING
    assert new is not None and old is not None
    return percent((new / old - 1) * 100)


def interval(
    ci: tuple[float, float] | None,
    formatter: Callable[[float | None], str] = users,
    *,
    ascii_only: bool = False,
) -> str:
    """A confidence interval as '110–118' ('' when absent)."""
    if ci is None:
        return ""
    dash = "-" if ascii_only else "–"
    return f"{formatter(ci[0])}{dash}{formatter(ci[1])}"


def saturation_users(sat: SaturationLike, *, ascii_only: bool = False) -> str:
    """The saturation point in users with its censoring: '114.2', '≥ 600' (the SLO never broke
    up to 600 users), '< 10' (it was already broken at the first level)."""
    if sat.users is None:
        return MISSING
    text = users(sat.users)
    if sat.censored == "above_max" or not sat.broken:
        return (">= " if ascii_only else "≥ ") + text
    if sat.censored == "below_start":
        return "< " + text
    return text


def saturation(sat: SaturationLike, *, with_ci: bool = False, ascii_only: bool = False) -> str:
    """The whole saturation point in one phrase: '114.2 users (CI 110–118) at 388 req/s'."""
    text = saturation_users(sat, ascii_only=ascii_only) + " users"
    if with_ci and sat.users_ci:
        text += f" (CI {interval(sat.users_ci, ascii_only=ascii_only)})"
    return f"{text} at {rps(sat.throughput_rps)} req/s"


def share(x: float | None) -> str:
    """A utilisation or a share (fraction) as a whole percentage: '97 %', '4 %', '0.4 %'."""
    if x is None or x != x:
        return MISSING
    pct = x * 100
    return f"{pct:.1f} %" if 0 < abs(pct) < 1 else f"{pct:.0f} %"


def quantity(x: float | None, unit: str = "") -> str:
    """A resource's amount with its unit: '0.31 cores', '16 slots', '120 MB', '3.5'."""
    if x is None or x != x:
        return MISSING
    text = value(round(x, 2) if abs(x) < 100 else round(x))
    if unit in ("", "ratio", "share"):
        return text
    if unit == "cores" and text == "1":
        return "1 core"
    return f"{text} {unit}"
