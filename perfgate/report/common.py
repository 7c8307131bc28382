"""What every report output shares: the verdict word, step order, run time, and the recorded
"which request type degraded first" (computed by analysis, read here as data)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from perfgate.models import RunResult, StepStats

__all__ = [
    "DEGRADED_FIRST_KEY",
    "FirstDegraded",
    "comparison_text",
    "deciding_rule",
    "duration_s",
    "first_degraded",
    "sorted_steps",
    "verdict_class",
    "verdict_word",
]

VERDICT_WORDS = {"pass": "PASS", "block": "BLOCKED", "inconclusive": "INCONCLUSIVE"}
# result.diagnostics key under which the pipeline records analysis.degraded_first(...)
DEGRADED_FIRST_KEY = "degraded_first"


def verdict_word(result: RunResult) -> str:
    """The status word shown everywhere: PASS, BLOCKED, INCONCLUSIVE, ABORTED or MANUAL RAMP."""
    if result.aborted:
        return "ABORTED"
    if getattr(result, "mode", "run") == "ramp":
        return "MANUAL RAMP"
    return VERDICT_WORDS.get(result.verdict, result.verdict.upper())


def verdict_class(result: RunResult) -> str:
    """pass | block | inconclusive | aborted | ramp: picks the banner colour."""
    if result.aborted:
        return "aborted"
    if getattr(result, "mode", "run") == "ramp":
        return "ramp"
    return result.verdict


def duration_s(result: RunResult) -> float | None:
    """Wall time of the run from its ISO timestamps (None if they do not parse)."""
    try:
        start = datetime.fromisoformat(result.started_at)
        end = datetime.fromisoformat(result.finished_at)
        return max(0.0, (end - start).total_seconds())
    except (TypeError, ValueError):
        return None


def sorted_steps(steps: tuple[StepStats, ...]) -> tuple[StepStats, ...]:
    """Steps in load order (adaptive search measures out of order)."""
    return tuple(sorted(steps, key=lambda s: (s.users, s.index)))


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstDegraded:
    """The recorded request type that degraded first (``name`` "": none stands out)."""

    method: str
    name: str
    users: int | None  # the level where its p95 crossed the SLO (None: none crossed)
    text: str


def first_degraded(result: RunResult) -> FirstDegraded | None:
    """``result.diagnostics["degraded_first"]`` as analysis recorded it, or None.

    The report computes nothing analytical: a result without the key (or with a malformed
    one) simply has no "degraded first" line.
    """
    data = result.diagnostics.get(DEGRADED_FIRST_KEY)
    if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not data["text"]:
        return None
    users = data.get("users")
    return FirstDegraded(
        method=str(data.get("method") or ""),
        name=str(data.get("name") or ""),
        users=users if isinstance(users, int) and not isinstance(users, bool) else None,
        text=data["text"],
    )


# a pass is decided by the comparison with the previous release when there was one, else the floor
_PASS_DECIDERS = ("regression", "floor")


def deciding_rule(result: RunResult) -> str | None:
    """The rule that decided the verdict and its numbers, in one sentence (what a reader needs
    first): the first failing rule of a block, the first inconclusive one, or what let it pass."""
    if getattr(result, "mode", "run") == "ramp":
        return None
    wanted = {"block": "fail", "inconclusive": "inconclusive", "pass": "pass"}.get(result.verdict)
    rules = [r for r in result.rules if r.outcome == wanted]
    if result.verdict == "pass":
        rank = {name: i for i, name in enumerate(_PASS_DECIDERS)}
        rules.sort(key=lambda r: rank.get(r.name, len(rank)))
    if not rules:
        return None
    rule = rules[0]
    message = rule.message.removeprefix(f"{rule.name}: ")
    return f"decided by the {rule.name} rule: {message}"


def comparison_text(result: RunResult) -> str | None:
    """How the previous release was measured: side by side now (with the last look), or stored."""
    base = result.baseline
    if base is None:
        return None
    if base.mode == "stored":
        when = f" (stored {base.created_at[:10]})" if base.created_at else ""
        return f"compared with {base.release}'s stored numbers{when}: it was not staged now"
    if not result.looks:
        return f"compared with {base.release}, measured side by side now"
    look = result.looks[-1]
    pairs = [w for w in result.windows if w.build == "candidate"]
    users = pairs[0].users if pairs else 0
    return (
        f"compared with {base.release}, measured side by side now at {users} users: goodput "
        f"ratio {look.ratio:.3f} (bounds {look.ratio_lo:.3f}-{look.ratio_hi:.3f}) after "
        f"{look.pairs} window pairs, look {look.index} ({look.outcome})"
    )
