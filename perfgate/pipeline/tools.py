"""The other things the CLI runs on staged targets: Locust's web UI, and calibration."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from perfgate import analysis, baseline, calibration, gate
from perfgate.errors import InputError, Interrupted, LoadError
from perfgate.events import EventSink, Log, StepMeasured
from perfgate.load.runner import LocustRunner
from perfgate.models import Saturation, to_jsonable
from perfgate.pipeline.options import RunOptions, local_load_only, prepare_scenario, staging_options
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
    """A/A runs of one build, each on freshly provisioned staging; stores the noise model."""
    scen = prepare_scenario(opts)
    strategy = gate.design._strategy(scen.ramp)
    results: list[Saturation] = []
    fp = None
    for i in range(runs):
        on_event(Log(message=f"calibration run {i + 1}/{runs}"))
        options = staging_options(opts, on_event, keep_namespace=False)
        with (
            provision(scen, provider=opts.provider, target=opts.target, options=options) as staged,
            LocustRunner(staged.url, scen.users, scen.slo, scen.load, on_event=on_event) as runner,
        ):
            got = strategy(
                runner,
                scen.ramp,
                scen.slo,
                on_step=lambda step: on_event(StepMeasured(step=step)),
            )
            fp = baseline.fingerprint(scen, provider=staged.provider, target=staged.url)
        sat = analysis.saturation(got.steps, scen.slo, max_users=scen.ramp.max_users)
        on_event(Log(message=f"run {i + 1}: {sat.reason}"))
        results.append(sat)
    try:
        model = calibration.estimate(
            results,
            scenario=scen.name,
            fingerprint=to_jsonable(fp) if fp else None,
            # sessions on different days accumulate: slow drift shows up only across them
            previous=calibration.load_noise(opts.baseline_dir, scen.name),
        )
    except ValueError as exc:
        raise InputError(f"calibration of {scen.name}: {exc}") from None
    return model, calibration.save_noise(model, opts.baseline_dir, scen.name)
