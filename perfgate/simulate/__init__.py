"""The simulator: a simulated system under test and the harness that measures the gate on it.

- :mod:`.queue`: the closed queueing target (:class:`SimulatedRunner`, a ``StepRunner``);
- :mod:`.noise`: the machine's and the deployments' noise over time, with named profiles
  (``shared`` is what the gate's defaults were chosen on; ``HELD_OUT`` ones it never saw);
- :mod:`.harness`: whole gates through :func:`perfgate.gate.run_gate`, the function
  ``perfgate run`` calls, counted into error rates with intervals;
- :mod:`.search`: adaptive search against a linear ramp;
- :mod:`.text`: the results in words.
"""

from perfgate.simulate.harness import (
    PRESETS,
    STAGINGS,
    Preset,
    SimSides,
    clopper_pearson,
    simulate,
    simulate_table,
    trial,
)
from perfgate.simulate.noise import HELD_OUT, NOISE_PROFILES, Deployment, NoiseProfile, Timeline
from perfgate.simulate.queue import SimulatedRunner, TargetModel
from perfgate.simulate.search import SEARCH_SETTINGS, compare_search
from perfgate.simulate.text import format_result, format_table

__all__ = [
    "HELD_OUT",
    "NOISE_PROFILES",
    "PRESETS",
    "SEARCH_SETTINGS",
    "STAGINGS",
    "Deployment",
    "NoiseProfile",
    "Preset",
    "SimSides",
    "SimulatedRunner",
    "TargetModel",
    "Timeline",
    "clopper_pearson",
    "compare_search",
    "format_result",
    "format_table",
    "simulate",
    "simulate_table",
    "trial",
]
