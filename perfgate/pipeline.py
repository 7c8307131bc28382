"""The only module that composes the stages: scenario → staging → load/search → analysis →
baseline + verdict → report.

Each stage gets and returns plain records (``perfgate.models``); this module decides the order,
keeps what was measured when a later stage fails or a signal arrives (a partial report, marked
aborted), and leaves exit codes to the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perfgate import adaptive, analysis, baseline, calibration, report, search, verdict
from perfgate._version import __version__
from perfgate.errors import (
    BaselineError,
    InputError,
    Interrupted,
    LoadError,
    OutputError,
    PerfgateError,
    ScenarioError,
)
from perfgate.load import templates
from perfgate.load.runner import LocustRunner, pod_files, relay_command
from perfgate.models import (
    BaselineRef,
    GateResult,
    RampSpec,
    RunResult,
    Saturation,
    Scenario,
    StepStats,
)
from perfgate.scenario import check_ramp, load_scenario
from perfgate.staging import StagingOptions, load_generators, provision, redact_url

Event = dict[str, Any]
EventSink = Callable[[Event], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What `perfgate run` / `perfgate ramp` were asked to do."""

    scenario: Path
    target: str | None = None
    provider: str | None = None
    release: str = "dev"
    baseline_dir: Path = Path("baselines")
    report_dir: Path = Path("reports")
    promote: bool = False
    force: bool = False
    gate: bool = True  # False: `perfgate ramp` (no baseline, no verdict)
    repeat: int = 1
    max_users: int | None = None
    step_users: int | None = None
    step_seconds: float | None = None
    strategy: str | None = None
    workers: int | None = None
    kubeconfig: str | None = None
    context: str | None = None
    keep_namespace: bool = False
    baseline_target: str | None = None
    command: str = ""
    seed: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    result: RunResult
    report: report.ReportFiles
    promoted: Path | None = None
    interrupted: Interrupted | None = None
    failure: PerfgateError | None = None  # an infrastructure failure after load had started
    promote_error: PerfgateError | None = None  # --promote could not store the (passing) run
    secrets: tuple[str, ...] = field(default=(), repr=False)


def default_release() -> str:
    """``PERFGATE_RELEASE``, else ``git describe --tags --always --dirty``, else ``dev``."""
    env = os.environ.get("PERFGATE_RELEASE")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "describe", "--tags", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "dev"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "dev"


def prepare_scenario(opts: RunOptions) -> Scenario:
    """Load the scenario, apply CLI overrides, and check its request templates."""
    scen = load_scenario(opts.scenario)
    changes: dict[str, Any] = {}
    for name in ("max_users", "step_users", "step_seconds", "strategy"):
        value = getattr(opts, name)
        if value is not None:
            changes[name] = value
    if changes:
        ramp = dataclasses.replace(scen.ramp, **changes)
        if ramp.max_users < ramp.start_users:
            ramp = dataclasses.replace(ramp, start_users=ramp.max_users)
        check_ramp(
            ramp, lambda key, msg: ScenarioError(f"--{key.split('.')[-1]}: {msg}".replace("_", "-"))
        )
        scen = dataclasses.replace(scen, ramp=ramp)
    if opts.workers is not None:
        scen = dataclasses.replace(scen, load=dataclasses.replace(scen.load, workers=opts.workers))
    if scen.staging.embedded:
        # the reference exchange's options: checked here, so `validate` catches them too
        from perfgate.staging.embedded import exchange_config

        exchange_config(scen)
    try:
        templates.compile_requests(scen.users.requests)
    except ValueError as exc:
        message = f"{opts.scenario}: {exc}"
        for secret in sorted(scen.users.secret_values, key=len, reverse=True):
            message = message.replace(secret, "***")  # a template may hold a ${VAR} value
        raise ScenarioError(message) from None
    return scen


def _local_load_only(scen: Scenario, what: str) -> None:
    if scen.load.placement == "kubernetes":
        raise InputError(
            f"{what} needs the load generator on this machine; the scenario has "
            "load.placement: kubernetes"
        )


def _strategy(ramp: RampSpec) -> Callable[..., search.SearchOutcome]:
    return adaptive.adaptive if ramp.strategy == "adaptive" else search.linear


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def execute(opts: RunOptions, *, on_event: EventSink = lambda e: None) -> Outcome:
    """Run the whole pipeline once; raise only for failures before any load was measured."""
    scen = prepare_scenario(opts)
    if opts.baseline_target:
        _local_load_only(scen, "--baseline-target")
    secrets = scen.users.secret_values + tuple(scen.users.headers.values())
    prev = None
    history: tuple[Any, ...] = ()
    noise = None
    # where the run's outputs go must be writable before minutes of load are spent (exit 3)
    check_writable(opts.report_dir, "reports")
    if opts.gate and opts.promote:
        check_writable(opts.baseline_dir, "baselines")
    if opts.gate:
        # read the baseline before spending minutes on load: a corrupt one is bad input (exit 2)
        prev = baseline.previous_baseline(opts.baseline_dir, scen.name, opts.release)
        history = tuple(b.ref() for b in baseline.list_baselines(opts.baseline_dir, scen.name))
        noise = calibration.load_noise(opts.baseline_dir, scen.name)
        if opts.promote:
            # refuse a clash now rather than after minutes of load
            baseline.check_can_store(opts.baseline_dir, scen.name, opts.release, force=opts.force)
    run_id = uuid.uuid4().hex[:6]
    started_at = _now()
    steps: list[StepStats] = []
    base_steps: list[StepStats] = []
    replicates: list[Saturation] = []
    base_replicates: list[Saturation] = []
    timeline: tuple[Any, ...] = ()
    interrupted: Interrupted | None = None
    failure: PerfgateError | None = None
    target_url = ""
    provider_used = opts.provider or ("none" if opts.target else scen.staging.provider)
    staging_details: dict[str, Any] = {}
    staging_opts = StagingOptions(
        release=opts.release,
        run_id=run_id,
        kubeconfig=opts.kubeconfig,
        context=opts.context,
        keep_namespace=opts.keep_namespace,
        log=lambda msg: on_event({"event": "log", "message": msg}),
    )
    strategy = _strategy(scen.ramp)
    rng = random.Random(opts.seed)

    def record(into: list[StepStats], tag: str) -> Callable[[StepStats], None]:
        def on_step(step: StepStats) -> None:
            into.append(step)
            on_event({"event": "step", "step": step, "build": tag})

        return on_step

    try:
        on_event({"event": "stage", "stage": "staging", "provider": provider_used})
        with contextlib.ExitStack() as stack:
            staged = stack.enter_context(
                provision(scen, provider=opts.provider, target=opts.target, options=staging_opts)
            )
            target_url = staged.url
            staging_details = {"description": staged.description, **staged.details}
            if staged.namespace:
                staging_details["namespace"] = staged.namespace
            on_event({"event": "stage", "stage": "load", "target": redact_url(staged.url)})
            engine: dict[str, Any] = {}
            if scen.load.placement == "kubernetes":
                # Locust master + workers as pods; the engine command relays to the master
                pod_data, secret_files = pod_files(staged.url, scen.users, scen.slo, scen.load)
                host, port = stack.enter_context(
                    load_generators(
                        scen, staged, staging_opts, files=pod_data, secret_files=secret_files
                    )
                )
                engine["engine_command"] = relay_command(host, port)
            runner = stack.enter_context(
                LocustRunner(
                    staged.url, scen.users, scen.slo, scen.load, on_event=on_event, **engine
                )
            )
            base_runner = None
            if opts.baseline_target:
                base_runner = stack.enter_context(
                    LocustRunner(
                        opts.baseline_target, scen.users, scen.slo, scen.load, on_event=on_event
                    )
                )
            try:
                for i in range(max(1, opts.repeat)):
                    order = [("candidate", runner)]
                    if base_runner is not None:
                        order.append(("baseline", base_runner))
                        rng.shuffle(order)  # randomised interleaving (RMIT) cancels drift
                    for tag, r in order:
                        on_event(
                            {"event": "replicate", "index": i + 1, "of": opts.repeat, "build": tag}
                        )
                        into = steps if tag == "candidate" else base_steps
                        extra: dict[str, Any] = {}
                        if i > 0 and scen.ramp.strategy == "adaptive":
                            # replicates re-measure the first runs' bracket, the same levels
                            # for both builds so level effects cancel in their ratio
                            extra["hint"] = adaptive.replicate_hint(
                                replicates[:1] + base_replicates[:1]
                            )
                        got = strategy(r, scen.ramp, scen.slo, on_step=record(into, tag), **extra)
                        sat = analysis.saturation(
                            got.steps, scen.slo, max_users=scen.ramp.max_users
                        )
                        (replicates if tag == "candidate" else base_replicates).append(sat)
            finally:
                timeline = runner.timeline
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = _interrupted(exc)
    except LoadError as exc:
        failure = exc
    if failure is not None and not steps:
        raise failure  # nothing was measured: a plain infrastructure error, no report
    if steps and not any(s.requests for s in steps) and not (interrupted or failure):
        failure = _no_requests(opts.scenario, scen, steps)
    for url in (target_url, opts.target or "", opts.baseline_target or ""):
        with contextlib.suppress(ValueError):  # a malformed URL failed earlier, loudly
            password = urllib.parse.urlsplit(url).password
            if password:
                secrets += (password,)  # it is in the command line and the target field

    # From here on a signal still leaves a report (marked aborted) of what was measured.
    candidate_steps = tuple(steps)
    fp = baseline.fingerprint(scen, provider=provider_used, target=target_url)
    prev_ref = prev.ref() if prev is not None else None
    try:
        on_event({"event": "stage", "stage": "analysis"})
        if replicates and not interrupted and not failure:
            sat = replicates[0] if len(replicates) == 1 else analysis.combine_replicates(replicates)
        else:
            sat = analysis.saturation(candidate_steps, scen.slo, max_users=scen.ramp.max_users)
        if opts.gate:
            comparable, note = baseline.comparability(
                fp, prev_ref.fingerprint if prev_ref else None
            )
            paired = bool(base_replicates)
            judged_against = prev_ref
            if paired and not interrupted and not failure:
                # paired mode: the previous release measured now, interleaved, is the baseline
                judged_against = BaselineRef(
                    release=f"{opts.baseline_target} (measured now)",
                    saturation=analysis.combine_replicates(base_replicates)
                    if len(base_replicates) > 1
                    else base_replicates[0],
                    fingerprint=fp,
                )
                comparable, note = True, ""
            elif prev is not None and prev.replicates:
                base_replicates = list(prev.replicates)  # a stored baseline's own replicates
            gate = verdict.decide(
                sat,
                gate=scen.gate,
                baseline=judged_against,
                steps=candidate_steps,
                replicates=tuple(replicates) if len(replicates) > 1 or base_replicates else (),
                baseline_replicates=tuple(base_replicates),
                noise=noise,
                comparable=comparable or judged_against is None,
                comparability_note=note,
                paired=paired,
            )
            prev_ref = judged_against
        else:
            gate = GateResult(verdict="pass", reasons=(f"manual ramp: {sat.reason}",))
        diagnostics = {
            **analysis.diagnostics(candidate_steps, scen.slo),
            "staging": staging_details,
            **({"gate_ratio": gate.ratio, "gate_ratio_ci": gate.ratio_ci} if gate.ratio else {}),
        }
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = interrupted or _interrupted(exc)
        sat = Saturation(
            users=None,
            throughput_rps=None,
            broken=False,
            reason="not analysed: the run was interrupted during the analysis",
        )
        gate = GateResult(verdict="inconclusive", reasons=())
        diagnostics = {"staging": staging_details}
    stopped = interrupted or failure
    if stopped is not None:
        gate = GateResult(
            verdict="inconclusive",
            reasons=(_abort_reason(stopped), *gate.reasons),
            rules=gate.rules,
        )
    result = RunResult(
        scenario=scen.name,
        release=opts.release,
        verdict=gate.verdict,
        reasons=gate.reasons,
        rules=gate.rules,
        saturation=sat,
        baseline=prev_ref,
        baseline_steps=tuple(base_steps)
        if base_steps
        else (prev.steps if prev is not None else ()),
        steps=candidate_steps,
        generator=_generator_summary(candidate_steps, scen),
        started_at=started_at,
        finished_at=_now(),
        perfgate_version=__version__,
        slo=scen.slo,
        gate=scen.gate,
        target=target_url,
        strategy=scen.ramp.strategy,
        fingerprint=fp,
        timeline=timeline,
        replicates=tuple(replicates) if len(replicates) > 1 else (),
        diagnostics=diagnostics,
        mode="run" if opts.gate else "ramp",
        aborted=bool(interrupted or failure),
        abort_reason=str(interrupted or failure or ""),
        command=opts.command,
    )
    # Everything that leaves this function (report, baseline, console) carries no secret.
    result = report.redact_result(result, secrets)
    on_event({"event": "stage", "stage": "report"})
    out_dir = run_folder(opts.report_dir, scen.name, opts.release)
    try:
        files = report.write_report(result, out_dir, history=history, secrets=secrets)
    except (KeyboardInterrupt, Interrupted) as exc:
        if result.aborted:
            raise  # a second signal: stop trying
        interrupted = _interrupted(exc)
        result = dataclasses.replace(
            result,
            verdict="inconclusive",
            reasons=(_abort_reason(interrupted), *result.reasons),
            aborted=True,
            abort_reason=str(interrupted),
        )
        # Rewritten whole, so no file of the folder claims a verdict the run did not reach.
        files = report.write_report(result, out_dir, history=history, secrets=secrets)
    promoted = None
    promote_error: PerfgateError | None = None
    if opts.gate and opts.promote and result.verdict == "pass" and not result.aborted:
        try:
            promoted = baseline.store_baseline(
                result, opts.baseline_dir, force=opts.force, source=str(files.dir)
            )
        except (BaselineError, OutputError) as exc:
            promote_error = exc  # the report is written: say so, then fail
    return Outcome(
        result=result,
        report=files,
        promoted=promoted,
        interrupted=interrupted,
        failure=failure,
        promote_error=promote_error,
        secrets=secrets,
    )


def check_writable(folder: Path, what: str) -> None:
    """OutputError unless ``folder`` exists as a writable folder or could be created as one."""
    existing = Path(folder)
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot write {what} to {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} to {folder}: {existing} is not writable")


def _interrupted(exc: BaseException) -> Interrupted:
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)


def _abort_reason(why: PerfgateError) -> str:
    return f"run aborted ({why}): the report holds the steps measured so far"


def _no_requests(path: Path, scen: Scenario, steps: list[StepStats]) -> ScenarioError:
    """The users never sent a request: the scenario (often a locustfile) is broken."""
    errors: dict[str, int] = {}
    for s in steps:
        for message, n in s.errors:
            errors[message] = errors.get(message, 0) + n
    top = max(errors, key=lambda m: errors[m]) if errors else ""
    where = f"users.locustfile {scen.users.locustfile}" if scen.users.locustfile else "users"
    levels = ", ".join(str(s.users) for s in steps)
    return ScenarioError(
        f"{path}: {where}: the virtual users sent no request at any load level ({levels} users)"
        + (f"; most frequent error: {top}" if top else "")
    )


def web_ui(opts: RunOptions, *, port: int, on_event: EventSink = lambda e: None) -> int:
    """`perfgate ramp --ui`: staging + Locust's own web UI on 127.0.0.1 until interrupted."""
    import signal
    import time

    scen = prepare_scenario(opts)
    _local_load_only(scen, "--ui")
    options = StagingOptions(
        release=opts.release,
        run_id=uuid.uuid4().hex[:6],
        kubeconfig=opts.kubeconfig,
        context=opts.context,
        keep_namespace=opts.keep_namespace,
        log=lambda msg: on_event({"event": "log", "message": msg}),
    )
    try:
        with (
            provision(scen, provider=opts.provider, target=opts.target, options=options) as staged,
            LocustRunner(
                staged.url, scen.users, scen.slo, scen.load, on_event=on_event, web_ui_port=port
            ) as runner,
        ):
            on_event(
                {
                    "event": "log",
                    "message": f"Locust web UI on {runner.ready.get('web_ui')} "
                    f"(target {staged.url}); Ctrl-C stops it",
                }
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
    strategy = _strategy(scen.ramp)
    results: list[Saturation] = []
    fp = None
    for i in range(runs):
        on_event({"event": "log", "message": f"calibration run {i + 1}/{runs}"})
        options = StagingOptions(
            release=opts.release,
            run_id=uuid.uuid4().hex[:6],
            kubeconfig=opts.kubeconfig,
            context=opts.context,
            log=lambda msg: on_event({"event": "log", "message": msg}),
        )
        with (
            provision(scen, provider=opts.provider, target=opts.target, options=options) as staged,
            LocustRunner(staged.url, scen.users, scen.slo, scen.load, on_event=on_event) as runner,
        ):
            got = strategy(
                runner,
                scen.ramp,
                scen.slo,
                on_step=lambda step: on_event({"event": "step", "step": step}),
            )
            fp = baseline.fingerprint(scen, provider=staged.provider, target=staged.url)
        sat = analysis.saturation(got.steps, scen.slo, max_users=scen.ramp.max_users)
        on_event({"event": "log", "message": f"run {i + 1}: {sat.reason}"})
        results.append(sat)
    from perfgate.models import to_jsonable

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


def run_folder(report_dir: Path, scenario: str, release: str) -> Path:
    """``<report_dir>/<scenario>/<release>-<UTC timestamp>``, unique even within one second."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe_release = "".join(c if c.isalnum() or c in "._-" else "_" for c in release)[:60] or "dev"
    base = report_dir / scenario / f"{safe_release}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _generator_summary(steps: tuple[StepStats, ...], scen: Scenario) -> dict[str, Any]:
    gens = [s.generator for s in steps if s.generator is not None]
    limited = [s.users for s in steps if s.generator is not None and s.generator.limited]
    return {
        "engine": "locust",
        "workers": scen.load.workers,
        "max_cpu_percent": max((g.cpu_percent for g in gens), default=None),
        "limited_at_users": limited,
        "request_timeout_s": scen.load.request_timeout_s,
        "cpu_count": os.cpu_count(),
    }
