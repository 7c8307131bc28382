"""Calibration measures the procedure the gate runs: A/A side-by-side runs of one build.

``perfgate calibrate`` and the simulator's ``--calibrated`` both call :func:`aa_run` on two fresh
deployments of the same build, and :func:`perfgate.calibration.estimate_side_by_side` turns the
runs into the priors :func:`perfgate.gate.priors` hands the gate (the deployment-difference SD and
the between-run SD). No cross-over here: the gap between two deployments is what is measured.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

from perfgate.calibration import SideBySideRun
from perfgate.gate.design import _NO_PROGRESS, GateInputs, Progress, Sides, run_gate
from perfgate.models import BaselineRef, Saturation

__all__ = ["aa_inputs", "aa_run"]


def aa_inputs(inputs: GateInputs) -> GateInputs:
    """``inputs`` turned into an A/A calibration run: side by side, no swap, no floor."""
    ref = BaselineRef(
        release="A/A",
        saturation=Saturation(users=None, throughput_rps=None, broken=False, reason="A/A"),
    )
    return replace(
        inputs,
        mode="side-by-side",
        baseline=ref,
        allow_swap=False,
        repeat=1,
        gate=replace(inputs.gate, min_users=None),
    )


def aa_run(sides: Sides, inputs: GateInputs, progress: Progress = _NO_PROGRESS) -> SideBySideRun:
    """One A/A run of the side-by-side procedure: the located boundary and the window pairs."""
    out = run_gate(sides, aa_inputs(inputs), progress)
    pairs: dict[int, dict[str, float]] = {}
    for w in out.windows:
        if w.goodput_rps > 0:
            pairs.setdefault(w.pair, {})[w.build] = math.log(w.goodput_rps)
    ratios = tuple(p["candidate"] - p["baseline"] for p in pairs.values() if len(p) == 2)
    first = [p["candidate"] for p in pairs.values() if "candidate" in p]
    return SideBySideRun(
        saturation=out.saturation,
        log_ratios=ratios,
        log_goodput=statistics.fmean(first) if first else 0.0,
    )
