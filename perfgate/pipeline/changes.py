"""A scenario edited since the previous release's baseline: say what changed and the way on.

Numbers stored under another scenario (other users, ramp, SLO or load) cannot judge this run,
so the stored-numbers comparison is inconclusive, naming the keys that changed (old → new) and
the two ways forward, neither of which needs a file deleted:

- **side by side** (the default whenever the baseline records how its release was staged, or
  with ``--baseline-target``): the previous release is measured again now, under the new
  scenario, so the stored fingerprint does not matter; the run notes the change;
- **``--accept-scenario-change "why"``** (stored numbers only): the old numbers are not judged,
  the floor and the generator decide, and the reason is recorded in result.json and, on
  ``--promote``, in the new baseline, which starts the baselines of the new scenario.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from perfgate import baseline
from perfgate.errors import InputError
from perfgate.models import GateResult, Scenario

__all__ = ["ScenarioChange", "accepted_rule", "advice", "detect", "reason_line", "record"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioChange:
    """The scenario differs from the one the previous release's baseline was measured with."""

    previous: str  # the previous release
    text: str  # "scenario changed: ramp.max_users 600 → 800"
    changes: tuple[tuple[str, str, str], ...]  # (key, old, new); empty for older baselines
    accepted: str = ""  # --accept-scenario-change's reason


def detect(
    scen: Scenario,
    prev: baseline.StoredBaseline | None,
    *,
    provider: str,
    accept: str | None,
) -> ScenarioChange | None:
    """The change since ``prev``'s baseline, or None; InputError for a pointless acceptance."""
    if accept is not None and not accept.strip():
        raise InputError('--accept-scenario-change: give the reason, e.g. "raised max_users"')
    now = baseline.fingerprint(scen, provider=provider, target="")
    if prev is None or prev.fingerprint is None or baseline.same_scenario(prev.fingerprint, now):
        if accept is not None:
            what = f"since {prev.release}'s baseline" if prev is not None else "(no baseline)"
            raise InputError(
                f"--accept-scenario-change: the scenario has not changed {what}: nothing to accept"
            )
        return None
    return ScenarioChange(
        previous=prev.release,
        text=baseline.scenario_change_text(prev.fingerprint, now),
        changes=baseline.scenario_changes(prev.fingerprint, now),
        accepted=(accept or "").strip(),
    )


def advice(change: ScenarioChange) -> str:
    """What to do, appended to the comparability rule's message."""
    return (
        f"to go on, measure {change.previous} again under the new scenario side by side (the "
        "default when its baseline records how it was staged; --baseline-target URL for --target "
        'runs), or accept the change: --accept-scenario-change "why" (the floor then decides '
        "and a promoted pass starts the new scenario's baselines)"
    )


def reason_line(change: ScenarioChange, mode: str) -> str | None:
    """The reason that tells the reader how the change was handled (None: the rule says it)."""
    since = f"{change.text} since {change.previous}'s baseline"
    if mode == "side-by-side":
        return f"baseline: {since}; {change.previous} was measured again under it, side by side"
    if change.accepted and mode == "none":
        return f"baseline: {since}; accepted ({change.accepted}): its stored numbers are not judged"
    return None


def accepted_rule(result: GateResult, change: ScenarioChange) -> GateResult:
    """The skipped regression rule says why it was skipped (an accepted change, not no baseline)."""
    message = (
        f"regression: not judged: the scenario changed since {change.previous} and the change "
        f"was accepted ({change.accepted}); a promoted pass starts the new scenario's baselines"
    )
    rules = tuple(
        dataclasses.replace(r, message=message)
        if r.name == "regression" and r.outcome == "skipped"
        else r
        for r in result.rules
    )
    return dataclasses.replace(result, rules=rules)


def record(change: ScenarioChange | None, mode: str) -> dict[str, Any]:
    """result.json's (and the baseline's) ``scenario_change``: what changed and how it was met."""
    if change is None:
        return {}
    handled = {"side-by-side": "measured side by side", "none": "accepted"}.get(mode, "refused")
    return {
        "previous_release": change.previous,
        "changes": [{"key": k, "old": a, "new": b} for k, a, b in change.changes],
        "summary": change.text,
        "handled": handled,
        "reason": change.accepted,
    }
