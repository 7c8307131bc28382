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
from perfgate.gate.rules import combine, decide, plan_looks

__all__ = [
    "DEFAULT_BETWEEN_SD",
    "DEFAULT_DEPLOY_SD",
    "GateInputs",
    "GateOutcome",
    "Priors",
    "Progress",
    "Sides",
    "combine",
    "decide",
    "plan_looks",
    "priors",
    "run_gate",
    "window_level",
]
