"""The other things the CLI runs on staged targets: Locust's web UI, and calibration."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from pathlib import Path

from perfgate import analysis, baseline, calibration, gate
from perfgate.errors import InputError, Interrupted, LoadError
from perfgate.events import EventSink, Log, StepMeasured
from perfgate.gate.calibrate import aa_run
from perfgate.load.runner import LocustRunner
from perfgate.models import Saturation, Scenario, to_jsonable
from perfgate.pipeline.options import (
    RunOptions,
    check_targets,
    local_load_only,
    opened_store,
    prepare_scenario,
    probe_baseline_target,
    staging_options,
)
from perfgate.pipeline.sides import LiveSides, Place, locked
from perfgate.staging import provision


def web_ui(opts: RunOptions, *, port: int, on_event: EventSink = lambda e: None) -> int:
    """`perfgate ramp --ui`: staging + Locust's own web UI on 127.0.0.1 until interrupted."""
    scen = prepare_scenario(opts)
    local_load_only(scen, "--ui")
    options = staging_options(opts, on_event)
    try:
        with (
            provision(scen, provider=opts.provider, target=opts.target, options=options) as staged,
            LocustRunner(
                staged.url, scen.users, scen.slo, scen.load, on_event=on_event, web_ui_port=port
            ) as runner,
        ):
            on_event(
                Log(
                    message=f"Locust web UI on {runner.ready.get('web_ui')} "
                    f"(target {staged.url}); Ctrl-C stops it"
                )
            )
            while runner.alive:
                time.sleep(0.5)
            raise LoadError("the load engine stopped")
    except KeyboardInterrupt:
        return Interrupted(signal.SIGINT).exit_code


def calibrate(
    opts: RunOptions, *, runs: int, on_event: EventSink = lambda e: None
) -> tuple[calibration.NoiseModel, Path]:
    """A/A runs of one build; stores the noise model beside the baselines.

    Where two copies can be staged (embedded, kubernetes, or ``--target`` with
    ``--baseline-target``), each run is the gate's own procedure on two fresh deployments side by
    side (:func:`perfgate.gate.calibrate.aa_run`), which measures the deployment difference and
    the between-run spread the gate's priors stand for. Otherwise: full searches on one target.
    """
    with opened_store(opts, on_event) as (local, into):
        model = _calibrated(local, runs, on_event)
        path = into.publish(
            lambda root: calibration.save_noise(model, root, model.scenario),
            message=f"perfgate: noise model of {model.scenario}",
            keep_to=Path("perfgate-unpushed"),
        )
        return model, Path(into.describe(path))


def _calibrated(opts: RunOptions, runs: int, on_event: EventSink) -> calibration.NoiseModel:
    scen = prepare_scenario(opts)
    check_targets(opts, scen)
    probe_baseline_target(opts)
    provider = opts.provider or ("none" if opts.target else scen.staging.provider)
    fp = baseline.fingerprint(scen, provider=provider, target=opts.target or "")
    previous = calibration.load_noise(opts.baseline_dir, scen.name)
    try:
        if provider != "none" or opts.baseline_target:
            local_load_only(scen, "perfgate calibrate")
            done = [_aa(opts, scen, i, runs, on_event) for i in range(runs)]
            model = calibration.estimate_side_by_side(
                done, scenario=scen.name, fingerprint=to_jsonable(fp), previous=previous
            )
        else:
            found = [_search(opts, scen, i, runs, on_event) for i in range(runs)]
            model = calibration.estimate(
                found, scenario=scen.name, fingerprint=to_jsonable(fp), previous=previous
            )
    except ValueError as exc:
        raise InputError(f"calibration of {scen.name}: {exc}") from None
    return model


def _aa(
    opts: RunOptions, scen: Scenario, i: int, runs: int, on_event: EventSink
) -> calibration.SideBySideRun:
    """One A/A side-by-side run on two freshly staged copies of the build."""
    on_event(Log(message=f"calibration run {i + 1}/{runs}: two copies side by side"))
    options = staging_options(opts, on_event, keep_namespace=False)
    sink = locked(on_event)
    with contextlib.ExitStack() as stack:
        places = []
        for target, run_id in ((opts.target, options.run_id), (opts.baseline_target, "")):
            staged = stack.enter_context(
                provision(
                    scen,
                    provider=opts.provider if target is None else None,
                    target=target,
                    options=dataclasses.replace(options, run_id=run_id or f"{options.run_id}b"),
                )
            )
            runner = stack.enter_context(
                LocustRunner(staged.url, scen.users, scen.slo, scen.load, on_event=sink)
            )
            places.append(Place(staged=staged, runner=runner, recipe=dict(staged.recipe)))
        inputs = gate.GateInputs(
            slo=scen.slo,
            ramp=scen.ramp,
            gate=scen.gate,
            mode="side-by-side",
            interleave=scen.gate.interleave,
            seed=opts.seed,
        )
        got = aa_run(LiveSides(places), inputs)
    on_event(Log(message=f"run {i + 1}: {got.saturation.reason}"))
    return got


def _search(opts: RunOptions, scen: Scenario, i: int, runs: int, on_event: EventSink) -> Saturation:
    """One full search on a freshly provisioned target (one copy only: no side-by-side run)."""
    on_event(Log(message=f"calibration run {i + 1}/{runs}"))
    options = staging_options(opts, on_event, keep_namespace=False)
    with (
        provision(scen, provider=opts.provider, target=opts.target, options=options) as staged,
        LocustRunner(staged.url, scen.users, scen.slo, scen.load, on_event=on_event) as runner,
    ):
        got = gate.design.search_strategy(scen.ramp)(
            runner, scen.ramp, scen.slo, on_step=lambda step: on_event(StepMeasured(step=step))
        )
    sat = analysis.saturation(got.steps, scen.slo, max_users=scen.ramp.max_users)
    on_event(Log(message=f"run {i + 1}: {sat.reason}"))
    return sat
