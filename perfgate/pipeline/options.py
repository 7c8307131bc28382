"""What a run was asked to do, and the scenario it will run: built once, read everywhere."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfgate import redaction, store
from perfgate.errors import InputError, ScenarioError
from perfgate.events import EventSink, Log
from perfgate.load import templates
from perfgate.models import RampSpec, Scenario, UsersSpec
from perfgate.scenario import check_ramp, load_scenario
from perfgate.staging import StagingOptions, probe_target, validate_url


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What `perfgate run` / `perfgate ramp` / `perfgate calibrate` were asked to do."""

    scenario: Path
    target: str | None = None
    provider: str | None = None
    release: str = "dev"
    baseline_dir: Path = Path("baselines")  # the local folder the baselines are read from
    baseline_store: str = ""  # --baseline-dir as given: a folder or git+<url>#<branch>
    report_dir: Path = Path("reports")
    promote: bool = False
    force: bool = False
    gate: bool = True  # False: `perfgate ramp` (no baseline, no verdict)
    repeat: int = 1
    locustfile: Path | None = None  # replaces the scenario's users (Locust's -f)
    start_users: int | None = None
    max_users: int | None = None
    step_users: int | None = None
    step_seconds: float | None = None
    strategy: str | None = None
    workers: int | None = None
    kubeconfig: str | None = None
    context: str | None = None
    keep_namespace: bool = False
    baseline_target: str | None = None  # the previous release's URL, measured side by side
    baseline_release: str | None = None  # judge against this stored release (default: newest)
    baseline_image: str | None = None  # stage the previous release from this image (kubernetes)
    side_by_side: bool = True  # False: judge against the stored numbers only
    extend: Path | None = None  # continue this inconclusive side-by-side gate (its result.json)
    accept_scenario_change: str | None = None  # the reason; stored numbers of another scenario
    command: str = ""
    seed: int | None = None


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
    for name in ("start_users", "max_users", "step_users", "step_seconds", "strategy"):
        value = getattr(opts, name)
        if value is not None:
            changes[name] = value
    if changes:
        ramp = dataclasses.replace(scen.ramp, **changes)
        _refuse_contradiction(opts, ramp)
        check_ramp(
            ramp, lambda key, msg: ScenarioError(f"--{key.split('.')[-1]}: {msg}".replace("_", "-"))
        )
        scen = dataclasses.replace(scen, ramp=ramp)
    if opts.locustfile is not None:
        scen = dataclasses.replace(scen, users=_locust_users(scen.users, opts.locustfile))
    if opts.workers is not None:
        scen = dataclasses.replace(scen, load=dataclasses.replace(scen.load, workers=opts.workers))
    if scen.staging.embedded:
        # the reference exchange's options: checked here, so `validate` catches them too
        from perfgate.staging.embedded import exchange_config

        exchange_config(scen)
    try:
        templates.compile_requests(scen.users.requests)
    except ValueError as exc:
        # a template may hold a ${VAR} value
        message = redaction.redact_text(str(exc), scen.users.secret_values)
        raise ScenarioError(f"{opts.scenario}: {message}") from None
    return scen


def _locust_users(users: UsersSpec, locustfile: Path) -> UsersSpec:
    """The scenario's users with ``--locustfile`` in place of its requests (or locustfile)."""
    if locustfile.suffix != ".py" or not locustfile.is_file():
        raise InputError(f"--locustfile {locustfile}: must be an existing Python file (.py)")
    return dataclasses.replace(users, requests=(), locustfile=str(locustfile.resolve()))


def _refuse_contradiction(opts: RunOptions, ramp: RampSpec) -> None:
    """InputError when the ramp overrides leave max users below start users (never clamped)."""
    if ramp.max_users >= ramp.start_users:
        return
    if opts.max_users is not None and opts.start_users is not None:
        raise InputError(f"--max-users {ramp.max_users} is below --start-users {ramp.start_users}")
    if opts.max_users is not None:
        raise InputError(
            f"--max-users {ramp.max_users} is below the scenario's ramp.start_users "
            f"{ramp.start_users} ({opts.scenario}); give --start-users too"
        )
    raise InputError(
        f"--start-users {ramp.start_users} is above the scenario's ramp.max_users "
        f"{ramp.max_users} ({opts.scenario}); give --max-users too"
    )


def local_load_only(scen: Scenario, what: str) -> None:
    """InputError when ``what`` needs the load generator here but the scenario puts it in pods."""
    if scen.load.placement == "kubernetes":
        raise InputError(
            f"{what} needs the load generator on this machine; the scenario has "
            "load.placement: kubernetes"
        )


def check_targets(opts: RunOptions, scen: Scenario) -> None:
    """``--target`` and ``--baseline-target`` alike, before anything is staged: InputError (2)."""
    if opts.target:
        validate_url(opts.target)
    if opts.baseline_target:
        validate_url(opts.baseline_target, "--baseline-target")
        local_load_only(scen, "--baseline-target")


def probe_baseline_target(opts: RunOptions) -> None:
    """The previous release's URL answers, like ``--target`` when it is staged (else exit 3).

    Last of the checks before any load: input errors are reported first.
    """
    if opts.baseline_target:
        probe_target(validate_url(opts.baseline_target, "--baseline-target"), "--baseline-target")


def staging_options(
    opts: RunOptions, on_event: EventSink, *, run_id: str | None = None, **changes: Any
) -> StagingOptions:
    """The one place StagingOptions are built from RunOptions (``changes`` override fields)."""
    fields: dict[str, Any] = {
        "release": opts.release,
        "run_id": run_id or uuid.uuid4().hex[:6],
        "kubeconfig": opts.kubeconfig,
        "context": opts.context,
        "keep_namespace": opts.keep_namespace,
        "log": lambda msg: on_event(Log(message=msg)),
    }
    fields.update(changes)
    return StagingOptions(**fields)


def reserved_prefix(scen: Scenario) -> str | None:
    """Names the load generator's pods use, refused in the scenario's own manifests."""
    if scen.load.placement != "kubernetes":
        return None
    from perfgate.load.pods import LOAD_NAME_PREFIX

    return LOAD_NAME_PREFIX


@contextlib.contextmanager
def opened_store(
    opts: RunOptions, on_event: EventSink
) -> Iterator[tuple[RunOptions, store.BaselineStore]]:
    """The baseline store for the run (a git store is fetched now), and ``opts`` reading from it.

    A manual ramp has no baseline: it opens nothing.
    """
    spec = opts.baseline_store or opts.baseline_dir
    if not opts.gate:
        yield opts, store.FolderStore(opts.baseline_dir)
        return
    with store.open_store(spec, log=lambda m: on_event(Log(message=m))) as into:
        yield dataclasses.replace(opts, baseline_dir=into.root), into
