"""The gate: the one decision behind every verdict, from measurements to pass/block/inconclusive.

Pure of I/O: it drives whatever :class:`~perfgate.gate.design.Sides` it is given — real Locust
runners against staged targets (the pipeline) or simulated closed queues (the simulator) — so
the error rates the simulator publishes are those of the gate users run.

- :mod:`perfgate.gate.design`: how evidence is gathered and when to stop (locate, alternating
  windows with planned looks, or replicated searches);
- :mod:`perfgate.gate.sequential`: the window-pair statistics, error spending, futility;
- :mod:`perfgate.gate.rules`: the rules (floor, generator, comparability, noise, regression on
  replicated searches) and how their outcomes combine into the verdict.
"""

from perfgate.gate.design import (
    DEFAULT_BETWEEN_SD,
    DEFAULT_DEPLOY_SD,
    GateInputs,
    GateOutcome,
    Priors,
    Progress,
    Sides,
    priors,
    run_gate,
    window_level,
)
from perfgate.gate.extend import Resume, resume_of
from perfgate.gate.extend import problem as extend_problem
from perfgate.gate.rules import combine, decide, plan_looks

__all__ = [
    "DEFAULT_BETWEEN_SD",
    "DEFAULT_DEPLOY_SD",
    "GateInputs",
    "GateOutcome",
    "Priors",
    "Progress",
    "Resume",
    "Sides",
    "combine",
    "decide",
    "extend_problem",
    "plan_looks",
    "priors",
    "resume_of",
    "run_gate",
    "window_level",
]
