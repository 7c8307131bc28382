"""``perfgate validate``: a scenario checked as a run would check it, without load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfgate import fmt
from perfgate.models import Scenario
from perfgate.pipeline.options import RunOptions, prepare_scenario


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioCheck:
    """What validate found: the scenario, manifest problems, a locustfile's User classes."""

    path: Path
    scenario: Scenario
    problems: tuple[str, ...] = ()
    user_classes: tuple[str, ...] = ()
    promql_problems: tuple[str, ...] = ()  # metrics.prometheus queries the server refused
    promql: str = ""  # how the queries were checked (by the server, or offline only)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.promql_problems


def check_scenario(opts: RunOptions, *, strict: bool = True) -> ScenarioCheck:
    """Load and check ``opts.scenario``: overrides, templates, manifests, the locustfile's import.

    Bad input raises (ScenarioError, one line); manifest problems are collected instead.
    """
    scen = prepare_scenario(opts)
    problems: tuple[str, ...] = ()
    if scen.staging.kubernetes is not None:
        from perfgate.staging.manifests import validate_manifests

        problems = validate_manifests(
            scen.staging.kubernetes,
            scenario_dir=Path(opts.scenario).resolve().parent,
            strict=strict,
        )
    classes: tuple[str, ...] = ()
    if scen.users.locustfile:
        from perfgate.load.check import check_locustfile

        classes = check_locustfile(scen.users.locustfile)
    promql_problems: list[str] = []
    promql = ""
    if scen.metrics.prometheus is not None:
        from perfgate.telemetry import check_queries

        promql_problems, how = check_queries(scen.metrics.prometheus)
        promql = f"{len(scen.metrics.prometheus.queries)} PromQL query(ies) {how}"
    return ScenarioCheck(
        path=opts.scenario,
        scenario=scen,
        problems=problems,
        user_classes=classes,
        promql_problems=tuple(promql_problems),
        promql=promql,
    )


def check_text(check: ScenarioCheck) -> str:
    """The one line validate prints for a good scenario."""
    scen, r = check.scenario, check.scenario.ramp
    event_slo = fmt.event_slo(scen.slo.event_p95_ms, scen.slo.event_loss_rate)
    users = (
        f"locustfile {Path(scen.users.locustfile).name} ({', '.join(check.user_classes)})"
        if scen.users.locustfile
        else f"{len(scen.users.requests)} request(s)"
    )
    return (
        f"{check.path}: ok: scenario {scen.name!r}, staging {scen.staging.provider}, {users}, "
        f"ramp {r.strategy} {r.start_users}..{r.max_users} users, "
        f"SLO p95 ≤ {scen.slo.p95_ms:g} ms and errors ≤ {scen.slo.error_rate:.2%}"
        + (f", streams {scen.users.streams.url}" if scen.users.streams else "")
        + (f", {event_slo[0].lower()}{event_slo[1:]}" if event_slo else "")
        + (f", {check.promql}" if check.promql else "")
    )


def check_record(check: ScenarioCheck) -> dict[str, Any]:
    """``validate --json``: what was checked, as one JSON object."""
    scen, r = check.scenario, check.scenario.ramp
    return {
        "scenario": str(check.path),
        "ok": check.ok,
        "name": scen.name,
        "staging": scen.staging.provider,
        "requests": [
            {"name": q.name, "method": q.method, "weight": q.weight} for q in scen.users.requests
        ],
        "locustfile": scen.users.locustfile,
        "user_classes": list(check.user_classes),
        "ramp": {
            "strategy": r.strategy,
            "start_users": r.start_users,
            "step_users": r.step_users,
            "max_users": r.max_users,
            "step_seconds": r.step_seconds,
        },
        "slo": {
            "p95_ms": scen.slo.p95_ms,
            "error_rate": scen.slo.error_rate,
            "event_p95_ms": scen.slo.event_p95_ms,
            "event_loss_rate": scen.slo.event_loss_rate,
        },
        "streams": scen.users.streams.url if scen.users.streams else None,
        "problems": [*check.problems, *check.promql_problems],
        "promql": check.promql,
    }


def error_record(path: Path, message: str) -> dict[str, Any]:
    """``validate --json`` for a scenario that could not be loaded."""
    return {"scenario": str(path), "ok": False, "error": message, "problems": [message]}
