"""``perfgate run`` / ``perfgate ramp`` as a short story: preflight → stage → measure → judge →
publish. Each phase takes and returns plain data; only this package composes the stages.

What was measured is kept when a later phase fails or a signal arrives: a partial report, marked
aborted. Exit codes are the CLI's business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perfgate import analysis, baseline, calibration, gate, redaction, report, store, telemetry
from perfgate._version import __version__
from perfgate.errors import (
    BaselineError,
    InputError,
    Interrupted,
    LoadError,
    OutputError,
    PerfgateError,
    ScenarioError,
    StagingError,
    TargetUnreachable,
)
from perfgate.events import (
    EventSink,
    Log,
    StageChanged,
    StepMeasured,
    look_event,
    window_event,
)
from perfgate.gitstore import StoreError
from perfgate.load.runner import LocustRunner
from perfgate.models import (
    BaselineRef,
    Bottleneck,
    GateResult,
    History,
    LookRecord,
    RunResult,
    Saturation,
    Scenario,
    StepStats,
    WindowStats,
    to_jsonable,
)
from perfgate.pipeline import changes
from perfgate.pipeline.observe import recorder_for
from perfgate.pipeline.options import (
    RunOptions,
    check_targets,
    opened_store,
    prepare_scenario,
    probe_baseline_target,
    reserved_prefix,
    staging_options,
)
from perfgate.pipeline.sides import LiveSides, Place, locked
from perfgate.staging import StagingOptions, provision, redact_url


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    result: RunResult
    report: report.ReportFiles
    promoted: str | None = None  # where the baseline went (a file, or git+<url>#<branch>:file)
    interrupted: Interrupted | None = None
    failure: PerfgateError | None = None  # an infrastructure failure after load had started
    promote_error: PerfgateError | None = None  # --promote could not store the (passing) run
    secrets: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What preflight settled before any load: the scenario, the baseline and how to judge."""

    opts: RunOptions
    scen: Scenario
    secrets: tuple[str, ...] = field(repr=False)
    prev: baseline.StoredBaseline | None
    history: History | None  # the stored releases: the report's history, the drift rule's levels
    noise: calibration.NoiseModel | None
    mode: gate.design.Mode
    recipe: dict[str, Any] | None  # how to stage the previous release next to the candidate
    provider: str
    run_id: str
    started_at: str
    change: changes.ScenarioChange | None = None  # the scenario differs from prev's
    store: store.BaselineStore = field(repr=False)
    resume: gate.Resume | None = None  # --extend: the inconclusive gate this run continues


@dataclass(slots=True)
class Evidence:
    """What the measurement phase gathered so far (kept when it is cut short)."""

    steps: list[StepStats] = field(default_factory=list)
    base_steps: list[StepStats] = field(default_factory=list)
    windows: list[WindowStats] = field(default_factory=list)
    looks: list[LookRecord] = field(default_factory=list)
    outcome: gate.GateOutcome | None = None
    target_url: str = ""
    staging: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    mode: gate.design.Mode = "none"
    fallback: str = ""  # why the previous release was not staged side by side
    timeline: tuple[Any, ...] = ()
    interrupted: Interrupted | None = None
    failure: PerfgateError | None = None


def execute(opts: RunOptions, *, on_event: EventSink = lambda e: None) -> Outcome:
    """Run the whole pipeline once; raise only for failures before any load was measured."""
    with opened_store(opts, on_event) as (local, into):
        plan = preflight(local, into)
        evidence = measure(plan, on_event)
        result = judge(plan, evidence, on_event)
        return publish(plan, result, evidence, on_event)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# preflight: everything that can fail before minutes of load are spent
# ---------------------------------------------------------------------------------------------


def preflight(opts: RunOptions, into: store.BaselineStore | None = None) -> Plan:
    scen = prepare_scenario(opts)
    provider = opts.provider or ("none" if opts.target else scen.staging.provider)
    _check_baseline_image(opts, None, provider, stored_known=False)  # before any request
    check_targets(opts, scen)
    check_writable(opts.report_dir, "reports")
    report.inside(opts.report_dir, opts.report_dir / scen.name, "reports")
    prev: baseline.StoredBaseline | None = None
    history: History | None = None
    noise: calibration.NoiseModel | None = None
    if opts.gate:
        if opts.promote:
            check_writable(opts.baseline_dir, "baselines")
        # read the baseline before spending minutes on load: a corrupt one is bad input (exit 2)
        prev = _previous(opts, scen)
        where = into.describe if into is not None else str
        if prev is not None:
            prev = dataclasses.replace(prev, where=where(prev.path))
        noise = calibration.load_noise(opts.baseline_dir, scen.name)
        history = _history(opts, scen, noise)
        if opts.promote:
            # refuse a clash now rather than after minutes of load
            baseline.check_can_store(opts.baseline_dir, scen.name, opts.release, force=opts.force)
    mode, recipe = _mode(opts, prev, provider)
    change = None
    if opts.gate:
        change = changes.detect(scen, prev, provider=provider, accept=opts.accept_scenario_change)
    if mode == "stored" and change is not None and change.accepted:
        mode = "none"  # the old numbers were measured under another scenario: not judged
    resume = _resume(opts, scen, prev, mode)
    probe_baseline_target(opts)  # the last check: input errors are reported first
    return Plan(
        opts=opts,
        scen=scen,
        secrets=scen.users.secret_values
        + _url_passwords(opts.target, opts.baseline_target, scen.staging.target)
        + store.credentials(opts.baseline_store),
        prev=prev,
        history=history,
        noise=noise,
        mode=mode,
        recipe=recipe,
        provider=provider,
        run_id=uuid.uuid4().hex[:6],
        started_at=_now(),
        store=into if into is not None else store.FolderStore(opts.baseline_dir),
        change=change,
        resume=resume,
    )


def _history(opts: RunOptions, scen: Scenario, noise: calibration.NoiseModel | None) -> History:
    """The stored releases as the history table (strict: a corrupt baseline is bad input)."""
    from perfgate import history as release_history  # pandas: only when there is a history

    stored = baseline.list_baselines(opts.baseline_dir, scen.name)
    if not stored:
        return History(scenario=scen.name)
    entries = [release_history.entry_of_baseline(b) for b in stored]
    return release_history.build(
        scen.name,
        entries,
        reference=baseline.read_reference(opts.baseline_dir, scen.name),
        between_sd=gate.priors(noise).between_sd,
    )


_UNCALIBRATED = (
    "no cross-over: two fixed URLs cannot swap builds, so a difference between the deployments "
    "counts as one between the builds (SD {sd:.0%} assumed; larger ones block good releases): "
    "`perfgate calibrate --baseline-target URL` measures yours (docs/verdict.md §6)"
)


_EVENTS_NOT_COMPARED = (
    "events: the users do not wait for them (users.streams.wait: false), so the side-by-side "
    "windows compare request goodput only; set users.streams.wait: true to compare the event "
    "path too (docs/events.md §3)"
)


def _previous(opts: RunOptions, scen: Scenario) -> baseline.StoredBaseline | None:
    if opts.baseline_release:
        return baseline.resolve_baseline(opts.baseline_dir, scen.name, opts.baseline_release)
    return baseline.previous_baseline(opts.baseline_dir, scen.name, opts.release)


def _mode(
    opts: RunOptions, prev: baseline.StoredBaseline | None, provider: str
) -> tuple[gate.design.Mode, dict[str, Any] | None]:
    """Side by side whenever the previous release can be staged; else its stored numbers."""
    if not opts.gate:
        return "none", None
    _check_baseline_image(opts, prev, provider)
    if opts.baseline_target:
        return "side-by-side", None
    if prev is None:
        return "none", None
    recipe = dict(prev.recipe)
    if opts.baseline_image:
        recipe["image"] = opts.baseline_image
    stageable = (provider == "embedded" and "exchange" in recipe) or (
        provider == "kubernetes" and bool(recipe.get("image"))
    )
    if opts.side_by_side and stageable:
        return "side-by-side", recipe
    return "stored", None


def _resume(
    opts: RunOptions, scen: Scenario, prev: baseline.StoredBaseline | None, mode: str
) -> gate.Resume | None:
    """The earlier run ``--extend`` continues, checked against this one before any load."""
    if opts.extend is None:
        return None
    where = f"--extend {opts.extend}"
    if opts.repeat > 1 or not opts.gate:
        raise InputError(f"{where}: only a gate of side-by-side windows can be extended")
    earlier = store.load_result(opts.extend)
    base = earlier.baseline.release if earlier.baseline is not None else None
    why = gate.extend_problem(gate.resume_of(earlier))
    if earlier.scenario != scen.name:
        why = f"it is a run of scenario {earlier.scenario!r}, not {scen.name!r}"
    elif earlier.release != opts.release:
        why = f"it is a run of release {earlier.release} (give --release {earlier.release})"
    elif earlier.slo != scen.slo or earlier.gate.max_regression != scen.gate.max_regression:
        why = "the scenario's SLO or gate changed since: judge it afresh"
    elif mode != "side-by-side":
        why = "the previous release cannot be staged side by side now"
    elif prev is not None and not opts.baseline_target and base != prev.release:
        why = f"it was compared with {base}, not {prev.release} (give --baseline-release {base})"
    if why:
        raise InputError(f"{where}: cannot extend it: {why}")
    return gate.resume_of(earlier)


def _check_baseline_image(
    opts: RunOptions,
    prev: baseline.StoredBaseline | None,
    provider: str,
    *,
    stored_known: bool = True,
) -> None:
    """InputError where --baseline-image would be ignored (a pass with no comparison asked for).

    ``stored_known`` False: the options alone, before the baseline store is read.
    """
    if not opts.baseline_image:
        return
    why = ""
    if provider != "kubernetes":
        why = f"it needs --staging kubernetes (staging here: {provider})"
    elif opts.baseline_target:
        why = "it contradicts --baseline-target"
    elif not opts.side_by_side:
        why = "it contradicts --no-side-by-side"
    elif prev is None and stored_known:
        shown = store.describe_spec(opts.baseline_store or opts.baseline_dir)
        why = f"no baseline of this scenario is stored in {shown} to stage from it"
    if why:
        raise InputError(f"--baseline-image {opts.baseline_image}: {why}")


# ---------------------------------------------------------------------------------------------
# stage + measure
# ---------------------------------------------------------------------------------------------


def measure(plan: Plan, on_event: EventSink) -> Evidence:
    """Stage the candidate (and the previous release), run the gate; keep what was measured."""
    ev = Evidence(mode=plan.mode)
    if plan.resume is not None:  # the earlier run's evidence is part of this one's
        ev.steps = list(plan.resume.steps)
        ev.windows = list(plan.resume.windows)
        ev.looks = list(plan.resume.looks)
    try:
        with contextlib.ExitStack() as stack:
            sides = _stage(plan, stack, ev, on_event)
            try:
                ev.outcome = gate.run_gate(sides, _inputs(plan, ev), _progress(ev, on_event))
            finally:
                ev.timeline = sides.places[0].runner.timeline
    except (KeyboardInterrupt, Interrupted) as exc:
        ev.interrupted = _interrupted(exc)
    except LoadError as exc:
        ev.failure = exc
    if ev.failure is not None and not ev.steps:
        raise ev.failure  # nothing was measured: a plain infrastructure error, no report
    if ev.steps and not any(s.requests for s in ev.steps) and not (ev.interrupted or ev.failure):
        ev.failure = _no_requests(plan.opts.scenario, plan.scen, ev.steps)
    if not (ev.interrupted or ev.failure):
        ev.failure = _baseline_measured_nothing(plan, ev)
    return ev


def _baseline_measured_nothing(plan: Plan, ev: Evidence) -> TargetUnreachable | None:
    """The previous release, loaded side by side, never answered a request successfully.

    A comparison with nothing is no comparison: an infrastructure failure (exit 3), never a pass.
    """
    if ev.mode != "side-by-side":
        return None
    windows = [w for w in ev.windows if w.build == "baseline"]
    if not windows and not ev.base_steps:
        return None
    good = sum(w.requests - w.failures for w in windows)
    good += sum(s.requests - s.failures for s in ev.base_steps)
    if good > 0:
        return None
    where = redact_url(plan.opts.baseline_target or "") or "its staged copy"
    return TargetUnreachable(
        f"the previous release ({_baseline_name(plan)}, {where}) answered no request "
        "successfully while it was measured side by side: no comparison is possible"
    )


def _stage(plan: Plan, stack: contextlib.ExitStack, ev: Evidence, on_event: EventSink) -> LiveSides:
    opts, scen = plan.opts, plan.scen
    options = staging_options(
        opts, on_event, run_id=plan.run_id, reserved_prefix=reserved_prefix(scen)
    )
    on_event(StageChanged(stage="staging", detail=plan.provider))
    staged = stack.enter_context(
        provision(scen, provider=opts.provider, target=opts.target, options=options)
    )
    ev.target_url, ev.recipe = staged.url, dict(staged.recipe)
    ev.staging = {"description": staged.description, **staged.details}
    if staged.namespace:
        ev.staging["namespace"] = staged.namespace
    on_event(StageChanged(stage="load", detail=redact_url(staged.url)))
    places = [
        Place(
            staged=staged,
            runner=_runner(plan, stack, staged, options, on_event),
            recipe=dict(staged.recipe),
            recorder=recorder_for(scen, staged, stack, exclude=reserved_prefix(scen)),
        )
    ]
    if plan.mode == "side-by-side":
        other = _stage_previous(plan, stack, ev, options, on_event)
        if other is not None:
            places.append(other)
    return LiveSides(places)


def _stage_previous(
    plan: Plan,
    stack: contextlib.ExitStack,
    ev: Evidence,
    options: StagingOptions,
    on_event: EventSink,
) -> Place | None:
    """The previous release next to the candidate; None (stored numbers) if it cannot be staged."""
    opts = plan.opts
    name = _baseline_name(plan)
    if opts.baseline_target:
        staged = stack.enter_context(
            provision(plan.scen, target=opts.baseline_target, options=options)
        )
    else:
        base_options = dataclasses.replace(
            options, release=name, run_id=f"{plan.run_id}b", recipe=plan.recipe
        )
        try:
            staged = stack.enter_context(
                provision(plan.scen, provider=opts.provider, options=base_options)
            )
        except StagingError as exc:
            ev.mode = "stored" if plan.prev is not None else "none"
            ev.fallback = f"the previous release {name} could not be staged ({exc})"
            on_event(Log(message=f"{ev.fallback}: judging against its stored numbers"))
            return None
    on_event(Log(message=f"previous release {name} side by side on {redact_url(staged.url)}"))
    if opts.baseline_target and (plan.noise is None or plan.noise.deploy_sd_log is None):
        on_event(Log(message=_UNCALIBRATED.format(sd=gate.priors(None).deploy_sd)))
    streams = plan.scen.users.streams
    if streams is not None and not streams.wait:
        on_event(Log(message=_EVENTS_NOT_COMPARED))
    ev.staging["baseline"] = {"description": staged.description, "release": name}
    runner = _runner(plan, stack, staged, options, on_event)
    recorder = recorder_for(plan.scen, staged, stack, exclude=reserved_prefix(plan.scen))
    return Place(staged=staged, runner=runner, recipe=dict(staged.recipe), recorder=recorder)


def _runner(
    plan: Plan,
    stack: contextlib.ExitStack,
    staged: Any,
    options: StagingOptions,
    on_event: EventSink,
) -> LocustRunner:
    scen = plan.scen
    engine: dict[str, Any] = {}
    if scen.load.placement == "kubernetes":
        # Locust master + workers as pods; the engine command relays to the master
        from perfgate.load.pods import LOAD_MASTER_NAME, load_generator_documents
        from perfgate.load.protocol import CONTROL_PORT
        from perfgate.load.runner import pod_files, relay_command
        from perfgate.staging import load_generators

        pod_data, secret_files = pod_files(staged.url, scen.users, scen.slo, scen.load)
        documents = load_generator_documents(scen.load, files=pod_data, secret_files=secret_files)
        master = (LOAD_MASTER_NAME, CONTROL_PORT)  # the pod the relay talks to
        host, port = stack.enter_context(
            load_generators(scen, staged, options, documents=documents, master=master)
        )
        engine["engine_command"] = relay_command(host, port)
    sink = locked(on_event) if plan.mode == "side-by-side" else on_event
    return stack.enter_context(
        LocustRunner(staged.url, scen.users, scen.slo, scen.load, on_event=sink, **engine)
    )


def _baseline_name(plan: Plan) -> str:
    if plan.opts.baseline_release:
        return plan.opts.baseline_release
    if plan.prev is not None:
        return plan.prev.release
    return "previous release"


def _inputs(plan: Plan, ev: Evidence) -> gate.GateInputs:
    prev, scen = plan.prev, plan.scen
    ref = prev.ref() if prev is not None else None
    if ref is None and ev.mode == "side-by-side":
        empty = Saturation(users=None, throughput_rps=None, broken=False, reason="not stored")
        ref = BaselineRef(release=_baseline_name(plan), saturation=empty)
    comparable, note = True, ""
    if ev.mode == "stored" and plan.change is not None and plan.change.accepted:
        ev.mode, ref = "none", None  # side by side fell back to the stored numbers: not judged
    if ev.mode == "stored" and prev is not None:
        fp = baseline.fingerprint(scen, provider=plan.provider, target=ev.target_url)
        comparable, note = baseline.comparability(prev.fingerprint, fp)  # old → new
        if not comparable and plan.change is not None:
            note += "; " + changes.advice(plan.change)
    return gate.GateInputs(
        slo=scen.slo,
        ramp=scen.ramp,
        gate=scen.gate,
        mode=ev.mode,
        baseline=ref,
        baseline_windows=prev.windows if prev is not None else (),
        baseline_replicates=prev.replicates if prev is not None else (),
        comparable=comparable,
        comparability_note=note,
        priors=gate.priors(plan.noise),
        repeat=plan.opts.repeat,
        seed=plan.opts.seed,
        gate_enabled=plan.opts.gate,
        interleave=scen.gate.interleave,
        resume=_resume_now(plan, ev),
        history=plan.history,
    )


def _resume_now(plan: Plan, ev: Evidence) -> gate.Resume | None:
    if plan.resume is not None and ev.mode != "side-by-side":
        raise StagingError(
            f"cannot extend {plan.opts.extend}: the previous release could not be staged side by "
            f"side ({ev.fallback or 'no recipe'})"
        )
    return plan.resume


def _progress(ev: Evidence, on_event: EventSink) -> gate.Progress:
    def on_step(step: StepStats, build: str) -> None:
        (ev.steps if build == "candidate" else ev.base_steps).append(step)
        on_event(StepMeasured(step=step, build=build))

    def on_window(w: WindowStats) -> None:
        ev.windows.append(w)
        on_event(window_event(w))

    def on_look(look: LookRecord) -> None:
        ev.looks.append(look)
        on_event(look_event(look))

    return gate.Progress(on_step=on_step, on_window=on_window, on_look=on_look)


# ---------------------------------------------------------------------------------------------
# judge: the result record (the gate decided; an aborted run is inconclusive)
# ---------------------------------------------------------------------------------------------


def judge(plan: Plan, ev: Evidence, on_event: EventSink) -> RunResult:
    on_event(StageChanged(stage="analysis"))
    scen = plan.scen
    steps = tuple(ev.steps)
    out = ev.outcome
    stopped = ev.interrupted or ev.failure
    try:
        if out is not None and stopped is None:
            sat, verdict, base = out.saturation, out.result, out.baseline
        else:
            sat = analysis.saturation(steps, scen.slo, max_users=scen.ramp.max_users)
            verdict = GateResult(verdict="inconclusive", reasons=())
            base = plan.prev.ref() if plan.prev is not None else None
        diagnostics = {
            **analysis.diagnostics(steps, scen.slo),
            "staging": ev.staging,
            "degraded_first": to_jsonable(analysis.degraded_first(steps, scen.slo.p95_ms)),
        }
    except (KeyboardInterrupt, Interrupted) as exc:
        stopped = ev.interrupted = ev.interrupted or _interrupted(exc)
        sat = Saturation(
            users=None,
            throughput_rps=None,
            broken=False,
            reason="not analysed: the run was interrupted during the analysis",
        )
        verdict, base, diagnostics = GateResult(verdict="inconclusive", reasons=()), None, {}
    if verdict.ratio is not None:
        diagnostics.update(gate_ratio=verdict.ratio, gate_ratio_ci=verdict.ratio_ci)
    verdict = _scenario_changed(plan, ev, verdict)
    bottleneck = _bottleneck(plan, ev, sat)
    if ev.fallback:
        verdict = dataclasses.replace(
            verdict,
            reasons=(
                f"baseline: {ev.fallback}; judged against its stored numbers",
                *verdict.reasons,
            ),
        )
    if stopped is not None:
        verdict = GateResult(
            verdict="inconclusive",
            reasons=(_abort_reason(stopped), *verdict.reasons),
            rules=verdict.rules,
        )
    return dataclasses.replace(
        _result(plan, ev, sat, verdict, base, diagnostics), bottleneck=bottleneck
    )


def _bottleneck(plan: Plan, ev: Evidence, sat: Saturation) -> Bottleneck | None:
    """Why it broke, from the steps' telemetry (pure; None when no telemetry ran)."""
    scen = plan.scen
    degraded = analysis.degraded_first(ev.steps, scen.slo.p95_ms)
    base_steps = tuple(ev.base_steps) or (plan.prev.steps if plan.prev is not None else ())
    return telemetry.attribute(
        ev.steps,
        sat,
        baseline_steps=base_steps,
        baseline_release=_baseline_name(plan),
        requests=[telemetry.Request(r.name, r.method, r.path) for r in scen.users.requests],
        degraded=(degraded.name, degraded.text) if degraded and degraded.name else None,
    )


def _scenario_changed(plan: Plan, ev: Evidence, verdict: GateResult) -> GateResult:
    """Say how a scenario edited since the previous baseline was met (side by side, accepted)."""
    if plan.change is None:
        return verdict
    if ev.mode == "none" and plan.change.accepted:
        verdict = changes.accepted_rule(verdict, plan.change)
    line = changes.reason_line(plan.change, ev.mode)
    return dataclasses.replace(verdict, reasons=(line, *verdict.reasons)) if line else verdict


def _result(
    plan: Plan,
    ev: Evidence,
    sat: Saturation,
    verdict: GateResult,
    base: BaselineRef | None,
    diagnostics: dict[str, Any],
) -> RunResult:
    opts, scen, out = plan.opts, plan.scen, ev.outcome
    if base is not None and ev.mode in ("side-by-side", "stored"):
        base = dataclasses.replace(base, mode=ev.mode)
    stored_steps = plan.prev.steps if plan.prev is not None and ev.mode != "none" else ()
    base_steps = tuple(ev.base_steps) or stored_steps
    stopped = ev.interrupted or ev.failure
    return RunResult(
        scenario=scen.name,
        release=opts.release,
        verdict=verdict.verdict,
        reasons=verdict.reasons,
        rules=verdict.rules,
        saturation=sat,
        baseline=base,
        baseline_steps=base_steps,
        steps=tuple(ev.steps),
        generator=_generator_summary(tuple(ev.steps), scen),
        started_at=plan.started_at,
        finished_at=_now(),
        perfgate_version=__version__,
        slo=scen.slo,
        gate=scen.gate,
        target=ev.target_url,
        strategy=scen.ramp.strategy,
        fingerprint=baseline.fingerprint(scen, provider=plan.provider, target=ev.target_url),
        timeline=ev.timeline,
        replicates=out.replicates if out is not None and len(out.replicates) > 1 else (),
        diagnostics=diagnostics,
        mode="run" if opts.gate else "ramp",
        aborted=stopped is not None,
        abort_reason=str(stopped or ""),
        command=opts.command,
        windows=tuple(ev.windows),
        looks=tuple(ev.looks),
        staging_recipe=ev.recipe,
        scenario_change=changes.record(plan.change, ev.mode),
    )


# ---------------------------------------------------------------------------------------------
# publish: report, baseline
# ---------------------------------------------------------------------------------------------


def publish(plan: Plan, result: RunResult, ev: Evidence, on_event: EventSink) -> Outcome:
    opts = plan.opts
    secrets = plan.secrets + _url_passwords(ev.target_url)
    # Everything that leaves this function (report, baseline, console) carries no secret.
    result = report.redact_result(result, secrets)
    on_event(StageChanged(stage="report"))
    out_dir = run_folder(opts.report_dir, plan.scen.name, opts.release)
    interrupted = ev.interrupted
    try:
        files = report.write_report(result, out_dir, history=plan.history, secrets=secrets)
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
        files = report.write_report(result, out_dir, history=plan.history, secrets=secrets)
    promoted, promote_error = None, None
    if opts.gate and opts.promote and result.verdict == "pass" and not result.aborted:
        try:
            promoted = baseline.publish_baseline(
                result,
                plan.store,
                force=opts.force,
                source=str(files.dir),
                keep_to=files.dir / "unpushed-baseline",
            )
        except (BaselineError, OutputError, StoreError) as exc:
            promote_error = exc  # the report is written: say so, then fail
    return Outcome(
        result=result,
        report=files,
        promoted=promoted,
        interrupted=interrupted,
        failure=ev.failure,
        promote_error=promote_error,
        secrets=secrets,
    )


def _url_passwords(*urls: str | None) -> tuple[str, ...]:
    """The passwords of ``urls``: secrets (they are in the command line and the target field)."""
    found = (redaction.url_password(url) for url in urls if url)
    return tuple(p for p in found if p)


def check_writable(folder: Path, what: str) -> None:
    """OutputError unless ``folder`` exists as a writable folder or could be created as one."""
    import os

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


def run_folder(report_dir: Path, scenario: str, release: str) -> Path:
    """A new ``<report_dir>/<scenario>/<release>-<UTC time>[-N]``, created for this run only."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe_release = "".join(c if c.isalnum() or c in "._-" else "_" for c in release)[:60] or "dev"
    return report.new_run_dir(report_dir, report_dir / scenario, f"{safe_release}-{stamp}")


def _generator_summary(steps: tuple[StepStats, ...], scen: Scenario) -> dict[str, Any]:
    import os

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
