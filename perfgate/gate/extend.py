"""Extending an inconclusive side-by-side gate: the same sequential test, continued.

A gate that ends inconclusive at its time budget has spent three quarters of its error budgets
(:data:`perfgate.gate.sequential.EXTENSION_SHARE` is kept back). ``perfgate run --extend
RESULT_JSON`` continues *that* test instead of starting a fresh one — a fresh run would be an
unplanned look that raises both error rates:

* the candidate's boundary and the window level ``N_w`` are the earlier run's (no new search);
* the earlier window pairs stay in the evidence; the new ones come from a new staging session
  (new deployments: each session gets its own deployment offset in the fit,
  :func:`perfgate.gate.sequential.estimate_pairs`);
* the extension's planned looks spend the kept quarter, so the gate and its one extension
  together stay within the budgets. A gate is extended once.

Side by side only: a comparison against stored numbers is limited by the drift between sessions,
which more windows cannot shrink.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from perfgate.models import LookRecord, RunResult, Saturation, StepStats, WindowStats

__all__ = ["Resume", "prior_pairs", "problem", "resume_of"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """What an extension takes over from the run it extends (its result.json)."""

    saturation: Saturation
    steps: tuple[StepStats, ...]
    windows: tuple[WindowStats, ...]
    looks: tuple[LookRecord, ...]

    @property
    def users(self) -> int:
        return self.windows[0].users

    @property
    def session(self) -> int:
        """The number of the extension's session (the earlier ones are 0…)."""
        return max(w.session for w in self.windows) + 1


def resume_of(result: RunResult) -> Resume:
    """What an extension takes over from a saved result."""
    return Resume(
        saturation=result.saturation,
        steps=result.steps,
        windows=result.windows,
        looks=result.looks,
    )


def problem(resume: Resume) -> str | None:
    """Why this run's evidence cannot be extended, or None."""
    if not resume.windows or not resume.looks:
        return "it has no side-by-side windows (only a side-by-side comparison can be extended)"
    if {w.build for w in resume.windows} != {"candidate", "baseline"}:
        return "it was judged against stored numbers (only side by side can be extended)"
    if resume.looks[-1].outcome != "inconclusive":
        return f"its comparison ended in {resume.looks[-1].outcome!r}, not inconclusive"
    if resume.session > 1:
        return "it is an extension already (a gate is extended once)"
    if len({w.users for w in resume.windows}) != 1:
        return "its windows are at several load levels"
    return None


def prior_pairs(windows: Sequence[WindowStats]) -> tuple[list[float], list[int], list[int]]:
    """(log ratios, arrangements, sessions) of the complete window pairs, in pair order."""
    by_pair: dict[int, dict[str, WindowStats]] = {}
    for w in windows:
        by_pair.setdefault(w.pair, {})[w.build] = w
    d, arrangement, sessions = [], [], []
    for pair in sorted(by_pair):
        got = by_pair[pair]
        if set(got) != {"candidate", "baseline"}:
            continue
        cand, base = got["candidate"], got["baseline"]
        d.append(math.log(max(cand.goodput_rps, 1e-9)) - math.log(max(base.goodput_rps, 1e-9)))
        arrangement.append(cand.arrangement)
        sessions.append(cand.session)
    return d, arrangement, sessions
