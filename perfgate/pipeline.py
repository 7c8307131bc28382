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
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perfgate import adaptive, analysis, baseline, calibration, report, search, verdict
from perfgate._version import __version__
from perfgate.errors import (
    Interrupted,
    LoadError,
    PerfgateError,
    ScenarioError,
)
from perfgate.load import templates
from perfgate.load.runner import LocustRunner
from perfgate.models import (
    GateResult,
    RampSpec,
    RunResult,
    Saturation,
    Scenario,
    StepStats,
)
from perfgate.scenario import check_ramp, load_scenario
from perfgate.staging import StagingOptions, provision

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
        check_ramp(ramp, lambda key, msg: ScenarioError(f"--{key.split('.')[-1]}: {msg}".replace("_", "-")))
        scen = dataclasses.replace(scen, ramp=ramp)
    if opts.workers is not None:
        scen = dataclasses.replace(scen, load=dataclasses.replace(scen.load, workers=opts.workers))
    try:
        templates.compile_requests(scen.users.requests)
    except ValueError as exc:
        raise ScenarioError(f"{opts.scenario}: {exc}") from None
    return scen


def _strategy(ramp: RampSpec) -> Callable[..., search.SearchOutcome]:
    return adaptive.adaptive if ramp.strategy == "adaptive" else search.linear


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def execute(opts: RunOptions, *, on_event: EventSink = lambda e: None) -> Outcome:
    """Run the whole pipeline once; raise only for failures before any load was measured."""
    scen = prepare_scenario(opts)
    secrets = scen.users.secret_values + tuple(scen.users.headers.values())
    prev = None
    history: tuple[Any, ...] = ()
    noise = None
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
            on_event({"event": "stage", "stage": "load", "target": staged.url})
            runner = stack.enter_context(
                LocustRunner(staged.url, scen.users, scen.slo, scen.load, on_event=on_event)
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
                        on_event({"event": "replicate", "index": i + 1, "of": opts.repeat, "build": tag})
                        into = steps if tag == "candidate" else base_steps
                        got = strategy(r, scen.ramp, scen.slo, on_step=record(into, tag))
                        sat = analysis.saturation(got.steps, scen.slo, max_users=scen.ramp.max_users)
                        (replicates if tag == "candidate" else base_replicates).append(sat)
            finally:
                timeline = runner.timeline
    except KeyboardInterrupt:
        import signal

        interrupted = Interrupted(signal.SIGINT)
    except Interrupted as exc:
        interrupted = exc
    except LoadError as exc:
        failure = exc
    if (interrupted or failure) and not steps:
        raise interrupted or failure  # type: ignore[misc]

    on_event({"event": "stage", "stage": "analysis"})
    candidate_steps = tuple(steps)
    if replicates and not interrupted and not failure:
        sat = replicates[0] if len(replicates) == 1 else analysis.combine_replicates(replicates)
    else:
        sat = analysis.saturation(candidate_steps, scen.slo, max_users=scen.ramp.max_users)
    fp = baseline.fingerprint(scen, provider=provider_used, target=target_url)
    prev_ref = prev.ref() if prev is not None else None
    if opts.gate:
        comparable, note = baseline.comparability(fp, prev_ref.fingerprint if prev_ref else None)
        gate = verdict.decide(
            sat,
            gate=scen.gate,
            baseline=prev_ref,
            steps=candidate_steps,
            replicates=tuple(replicates) if len(replicates) > 1 or base_replicates else (),
            baseline_replicates=tuple(base_replicates),
            noise=noise,
            comparable=comparable or prev_ref is None,
            comparability_note=note,
        )
    else:
        gate = GateResult(verdict="pass", reasons=(f"manual ramp: {sat.reason}",))
    if interrupted or failure:
        why = str(interrupted or failure)
        gate = GateResult(
            verdict="inconclusive",
            reasons=(f"run aborted ({why}): the report holds the steps measured so far", *gate.reasons),
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
        baseline_steps=prev.steps if prev is not None else tuple(base_steps),
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
        diagnostics={
            **analysis.diagnostics(candidate_steps, scen.slo),
            "staging": staging_details,
            **({"gate_ratio": gate.ratio, "gate_ratio_ci": gate.ratio_ci} if gate.ratio else {}),
        },
        mode="run" if opts.gate else "ramp",
        aborted=bool(interrupted or failure),
        abort_reason=str(interrupted or failure or ""),
        command=opts.command,
    )
    on_event({"event": "stage", "stage": "report"})
    out_dir = run_folder(opts.report_dir, scen.name, opts.release)
    files = report.write_report(result, out_dir, history=history, secrets=secrets)
    promoted = None
    if opts.gate and opts.promote and result.verdict == "pass" and not result.aborted:
        promoted = baseline.store_baseline(
            result, opts.baseline_dir, force=opts.force, source=str(files.dir)
        )
    return Outcome(
        result=result,
        report=files,
        promoted=promoted,
        interrupted=interrupted,
        failure=failure,
        secrets=secrets,
    )


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
