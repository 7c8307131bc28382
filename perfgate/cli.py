"""The command line: parse options, call the library, map the outcome to an exit code.

Exit codes: 0 pass · 1 blocked · 2 bad input · 3 infrastructure failure · 4 inconclusive ·
70 internal error (a bug; traceback printed) · 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar

import typer

from perfgate._version import __version__
from perfgate.cli_baselines import GateBaselineDirOpt, baseline_app, ci_app, history
from perfgate.errors import (
    EXIT_BLOCK,
    EXIT_INCONCLUSIVE,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_PASS,
    EXIT_SIGINT,
    InputError,
    Interrupted,
    PerfgateError,
)

if TYPE_CHECKING:
    from perfgate.console import Progress
    from perfgate.pipeline import RunOptions

T = TypeVar("T")

HELP = """perfgate: a performance-regression release gate.

Ramps closed-model Locust users against a staging copy of your service until the latency SLO
breaks, compares that saturation point with the previous release's baseline, and exits with a
verdict: 0 pass, 1 blocked, 2 bad input, 3 infrastructure failure, 4 inconclusive,
70 internal error, 130/143 interrupted.

Every option of run, ramp and calibrate can also be given as an environment variable
PERFGATE_<OPTION> (e.g. PERFGATE_MAX_USERS=300, PERFGATE_TARGET=http://...); the command line
wins. Shell completion: perfgate --install-completion.
"""

app = typer.Typer(
    help=HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
exchange_app = typer.Typer(
    help="The reference exchange (perfgate's embedded default target).", no_args_is_help=True
)
staging_app = typer.Typer(help="Staging housekeeping.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")
app.add_typer(exchange_app, name="exchange")
app.add_typer(staging_app, name="staging")
app.add_typer(ci_app, name="ci")
app.command("history")(history)

_state = {"debug": False}

Provider = Literal["none", "embedded", "kubernetes"]
Strategy = Literal["linear", "adaptive"]
# run, ramp and calibrate read every option from PERFGATE_<OPTION> too (click's auto envvars,
# shown in --help); the command line wins over the environment
ENV_OPTIONS: dict[str, Any] = {"auto_envvar_prefix": "PERFGATE"}

ScenarioOpt = Annotated[
    Path | None,
    typer.Option(
        "--scenario",
        "-s",
        help="Scenario file (YAML). Default: ./perfgate.yaml if this folder has one (perfgate init writes it); else, with --target/--host or --locustfile, the packaged generic service scenario (GET /, p95 ≤ 500 ms, no floor); else the packaged exchange scenario (the repository's scenarios/exchange.yaml).",
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "--host",
        "-H",
        help="Load this URL instead of provisioning staging (implies --staging none); --host is Locust's name for it.",
    ),
]
StagingOpt = Annotated[
    Provider | None,
    typer.Option("--staging", help="Staging provider (default: the scenario's)."),
]
LocustfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--locustfile",
        "-f",
        help="A locustfile whose User classes replace the scenario's requests (as with locust -f).",
    ),
]
ReportDirOpt = Annotated[
    Path, typer.Option(help="Where run folders are written.", show_default=True)
]
MaxUsersOpt = Annotated[int | None, typer.Option(help="Override ramp.max_users.", min=1)]
StartUsersOpt = Annotated[int | None, typer.Option(help="Override ramp.start_users.", min=1)]
StepUsersOpt = Annotated[int | None, typer.Option(help="Override ramp.step_users.", min=1)]
StepSecondsOpt = Annotated[
    float | None, typer.Option(help="Override ramp.step_seconds (seconds per level).", min=0.5)
]
StrategyOpt = Annotated[Strategy | None, typer.Option(help="Override ramp.strategy.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        help="Load generator processes on this machine (override load.workers).", min=1, max=256
    ),
]
KubeconfigOpt = Annotated[
    str | None, typer.Option(help="Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")
]
ContextOpt = Annotated[str | None, typer.Option(help="Kubeconfig context to use.")]
KeepNsOpt = Annotated[
    bool,
    typer.Option(
        "--keep-namespace",
        help="Keep the staging namespace after the run (prints how to delete it).",
    ),
]
ReleaseOpt = Annotated[
    str | None,
    typer.Option(help="Release name (default: $PERFGATE_RELEASE, else `git describe`, else dev)."),
]
PromoteOpt = Annotated[
    bool, typer.Option(help="On a pass, store this run as the scenario's newest baseline.")
]
ForceOpt = Annotated[
    bool, typer.Option(help="With --promote: overwrite an existing baseline of this release.")
]
RepeatOpt = Annotated[
    int,
    typer.Option(
        help="Replicate design: K full searches per build instead of the side-by-side windows.",
        min=1,
        max=50,
    ),
]
BaselineTargetOpt = Annotated[
    str | None,
    typer.Option(
        help="URL of the previous release, measured side by side with the candidate (for --target runs)."
    ),
]
BaselineReleaseOpt = Annotated[
    str | None,
    typer.Option(help="Judge against this stored release (default: the newest other one)."),
]
BaselineImageOpt = Annotated[
    str | None,
    typer.Option(
        help="Kubernetes: stage the previous release from this image (default: the one its baseline recorded)."
    ),
]
SideBySideOpt = Annotated[
    bool,
    typer.Option(
        "--side-by-side/--no-side-by-side",
        help="Stage the previous release next to the candidate when its baseline says how (default), or judge against the stored numbers only.",
    ),
]
ExtendOpt = Annotated[
    Path | None,
    typer.Option(
        "--extend",
        help="Continue an inconclusive side-by-side gate (its result.json): the same sequential test, more window pairs, on the error budget kept for it; once.",
        dir_okay=False,
    ),
]
AcceptChangeOpt = Annotated[
    str | None,
    typer.Option(
        "--accept-scenario-change",
        metavar="REASON",
        help="The scenario changed since the stored baseline and its numbers are all there is: do not judge them, let the floor decide, and record REASON (a promoted pass starts the new scenario's baselines). Side by side needs no such thing: it re-measures the previous release under the new scenario.",
    ),
]
SeedOpt = Annotated[
    int | None, typer.Option(help="Seed for the gate's random order (reproducible runs).")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", envvar="PERFGATE_JSON", help="Print result.json to stdout.")
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No live progress: print only the verdict line and the report path."
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]


def _fail(message: str, code: int = EXIT_INPUT) -> NoReturn:
    raise _Exit(message, code)


class _Exit(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _choice(value: str | None, name: str, options: tuple[str, ...]) -> str | None:
    if value is not None and value not in options:
        raise InputError(f"{name}: must be one of {', '.join(options)}, got {value!r}")
    return value


def _command_line() -> str:
    return shlex.join(["perfgate", *sys.argv[1:]])


def _install_sigterm() -> None:
    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not cut the teardown
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, on_term)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"perfgate {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: DebugOpt = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print perfgate's version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    _state["debug"] = debug or os.environ.get("PERFGATE_DEBUG") == "1"


def _run_options(ctx: typer.Context, **fixed: Any) -> RunOptions:
    """The command's parsed options as RunOptions, then ``fixed`` over them.

    Every option of a staged command is named as the RunOptions field it sets (``--staging``
    sets ``provider``; ``--baseline-dir``, a folder or a git store, sets ``baseline_store``),
    so this is the one place they are copied over and checked.
    """
    from perfgate.pipeline import RunOptions

    names = {f.name for f in dataclasses.fields(RunOptions)} - {"baseline_dir"}
    given = {k: v for k, v in ctx.params.items() if k in names}
    given["provider"] = ctx.params["staging"]
    if "baseline_dir" in ctx.params:
        given["baseline_store"] = ctx.params["baseline_dir"]
    if given["scenario"] is None:
        from perfgate.scenario import SERVICE_SCENARIO, default_scenario

        own = bool(ctx.params.get("target") or ctx.params.get("locustfile"))
        given["scenario"] = default_scenario(own_service=own)
        if given["scenario"] == SERVICE_SCENARIO and not ctx.params.get("quiet"):
            print(
                "perfgate: no scenario given: the generic service scenario (GET /, or the "
                "locustfile's users; p95 ≤ 500 ms); `perfgate init URL` writes one to edit",
                file=sys.stderr,
            )
    return RunOptions(**{**given, **fixed})


def _with_progress(
    call: Callable[[Progress], T], *, live: bool | None = None, quiet: bool = False
) -> T:
    """``call`` with SIGTERM turned into an interruption and its events drawn as they arrive
    (``quiet``: dropped)."""
    from perfgate.console import Progress

    _install_sigterm()
    with Progress(live=live, quiet=quiet) as progress:
        return call(progress)


def _run_pipeline(opts: RunOptions, *, as_json: bool, quiet: bool = False) -> int:
    from perfgate import pipeline
    from perfgate.report import console_summary, console_verdict

    outcome = _with_progress(
        lambda progress: pipeline.execute(opts, on_event=progress), quiet=quiet
    )
    result = outcome.result
    if as_json:
        sys.stdout.write(outcome.report.json.read_text(encoding="utf-8"))
        sys.stdout.flush()
    summary = console_verdict if quiet else console_summary
    print(summary(result, outcome.report.dir), file=sys.stderr)
    if outcome.promoted:
        print(f"promoted as the baseline of {result.release}: {outcome.promoted}", file=sys.stderr)
    elif outcome.promote_error is not None:
        print(f"perfgate: error: not promoted: {outcome.promote_error}", file=sys.stderr)
        return outcome.promote_error.exit_code
    elif opts.gate and opts.promote:
        print(f"not promoted: the verdict is {result.verdict}", file=sys.stderr)
    if outcome.interrupted is not None:
        return outcome.interrupted.exit_code
    if outcome.failure is not None:
        print(f"perfgate: error: {outcome.failure}", file=sys.stderr)
        return outcome.failure.exit_code
    if not opts.gate:
        return EXIT_PASS
    return {"pass": EXIT_PASS, "block": EXIT_BLOCK}.get(result.verdict, EXIT_INCONCLUSIVE)


@app.command(context_settings=ENV_OPTIONS)
def run(
    ctx: typer.Context,
    scenario: ScenarioOpt = None,
    target: TargetOpt = None,
    locustfile: LocustfileOpt = None,
    staging: StagingOpt = None,
    release: ReleaseOpt = None,
    baseline_dir: GateBaselineDirOpt = "baselines",
    report_dir: ReportDirOpt = Path("reports"),
    promote: PromoteOpt = False,
    force: ForceOpt = False,
    start_users: StartUsersOpt = None,
    max_users: MaxUsersOpt = None,
    step_users: StepUsersOpt = None,
    step_seconds: StepSecondsOpt = None,
    strategy: StrategyOpt = None,
    repeat: RepeatOpt = 1,
    baseline_target: BaselineTargetOpt = None,
    baseline_release: BaselineReleaseOpt = None,
    baseline_image: BaselineImageOpt = None,
    side_by_side: SideBySideOpt = True,
    extend: ExtendOpt = None,
    accept_scenario_change: AcceptChangeOpt = None,
    workers: WorkersOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    keep_namespace: KeepNsOpt = False,
    seed: SeedOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """The gate: provision staging, ramp until the SLO breaks, compare with the baseline, exit with the verdict."""
    from perfgate.pipeline import default_release

    opts = _run_options(ctx, release=release or default_release(), command=_command_line())
    return _run_pipeline(opts, as_json=as_json, quiet=quiet)


@app.command(context_settings=ENV_OPTIONS)
def ramp(
    ctx: typer.Context,
    scenario: ScenarioOpt = None,
    target: TargetOpt = None,
    locustfile: LocustfileOpt = None,
    staging: StagingOpt = None,
    report_dir: ReportDirOpt = Path("reports"),
    start_users: StartUsersOpt = None,
    max_users: MaxUsersOpt = None,
    step_users: StepUsersOpt = None,
    step_seconds: StepSecondsOpt = None,
    strategy: StrategyOpt = None,
    workers: WorkersOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    keep_namespace: KeepNsOpt = False,
    ui: Annotated[
        bool,
        typer.Option(
            "--ui", help="Open Locust's own web UI on 127.0.0.1 instead of the automatic ramp."
        ),
    ] = False,
    ui_port: Annotated[
        int, typer.Option(help="Port of the web UI with --ui (1-65535).", min=1, max=65535)
    ] = 8089,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """A manual ramp with a live table: no gate, no baseline. Ctrl-C stops it and writes what was measured."""
    opts = _run_options(ctx, release="ramp", gate=False, command=_command_line())
    if ui:
        from perfgate import pipeline

        return _with_progress(
            lambda progress: pipeline.web_ui(opts, port=ui_port, on_event=progress), live=False
        )
    return _run_pipeline(opts, as_json=as_json, quiet=quiet)


@app.command()
def validate(
    scenario: Annotated[Path, typer.Argument(help="Scenario file to check.")],
    locustfile: LocustfileOpt = None,
    strict: Annotated[
        bool, typer.Option(help="Kubernetes manifests: reject unknown fields too.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> int:
    """Check a scenario file (its Kubernetes manifests rendered, its locustfile imported in a child process, its PromQL queries parsed by the server when it answers) without running anything."""
    from perfgate.pipeline import RunOptions
    from perfgate.pipeline.check import check_record, check_scenario, check_text, error_record

    try:
        check = check_scenario(RunOptions(scenario=scenario, locustfile=locustfile), strict=strict)
    except PerfgateError as exc:
        if as_json:
            print(json.dumps(error_record(scenario, str(exc)), indent=2))
        raise
    if as_json:
        print(json.dumps(check_record(check), indent=2))
    for p in (*check.problems, *check.promql_problems):
        print(f"{scenario}: {p}", file=sys.stderr)
    if check.problems:
        print(f"{scenario}: {len(check.problems)} manifest error(s)", file=sys.stderr)
    if check.promql_problems:
        print(f"{scenario}: {len(check.promql_problems)} PromQL error(s)", file=sys.stderr)
    if not check.ok:
        return EXIT_INPUT
    if not as_json:
        print(check_text(check))
    return EXIT_PASS


@app.command()
def init(
    url: Annotated[
        str, typer.Argument(help="Your service's base URL (staging), e.g. http://localhost:8080.")
    ],
    openapi: Annotated[
        Path | None,
        typer.Option(
            help="OpenAPI 3 document (JSON or YAML): one weighted request per GET/POST operation."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Scenario file to write.", show_default=True)
    ] = Path("perfgate.yaml"),
    name: Annotated[
        str | None, typer.Option(help="Scenario name (default: from the URL's host).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> int:
    """Write a scenario for your own service (from its URL, or its OpenAPI document) and print the CI snippet."""
    from perfgate.scaffold import ci_snippet, scaffold, write_scaffold

    made = scaffold(url, openapi=openapi, name=name, output=output)
    write_scaffold(made, output, force=force)
    print(f"wrote {output}: scenario {made.name!r}, {made.requests} request(s) against {url}")
    print(ci_snippet(output))
    return EXIT_PASS


@app.command()
def report(
    result_json: Annotated[Path, typer.Argument(help="A saved result.json.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Folder to write to (default: the folder holding RESULT_JSON)."),
    ] = None,
    baseline_dir: GateBaselineDirOpt = "baselines",
) -> int:
    """Re-render every output (HTML, JUnit, Markdown, CSV) from a saved result.json, without load."""
    from perfgate import history as hist
    from perfgate import store
    from perfgate.models import History
    from perfgate.report import load_result, write_report

    result = load_result(result_json)
    history: History | None = None
    try:
        with store.read_only(baseline_dir) as folder:
            loaded = hist.load(folder, result.scenario)
        history = loaded.history
        for path, message in loaded.problems:
            print(f"perfgate: warning: history left out {path}: {message}", file=sys.stderr)
    except PerfgateError as exc:
        print(f"perfgate: warning: history chart left out: {exc}", file=sys.stderr)
    files = write_report(result, out or result_json.parent, history=history)
    print(files.html)
    return EXIT_PASS


@app.command(context_settings=ENV_OPTIONS)
def calibrate(
    ctx: typer.Context,
    scenario: ScenarioOpt = None,
    runs: Annotated[
        int, typer.Option(help="Number of A/A runs (≥ 3; 10 or more recommended).", min=3, max=100)
    ] = 10,
    target: TargetOpt = None,
    locustfile: LocustfileOpt = None,
    baseline_target: BaselineTargetOpt = None,
    staging: StagingOpt = None,
    baseline_dir: GateBaselineDirOpt = "baselines",
    start_users: StartUsersOpt = None,
    max_users: MaxUsersOpt = None,
    step_users: StepUsersOpt = None,
    step_seconds: StepSecondsOpt = None,
    strategy: StrategyOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> int:
    """Measure this environment's noise with A/A runs of the gate's own procedure; store it beside the baselines."""
    from perfgate import pipeline
    from perfgate.calibration import format_noise

    opts = _run_options(ctx, release="calibration")
    model, path = _with_progress(
        lambda progress: pipeline.calibrate(opts, runs=runs, on_event=progress)
    )
    print(format_noise(model))
    print(f"stored {path}")
    return EXIT_PASS


# `perfgate simulate`'s options
_SimRegression = Annotated[
    float,
    typer.Option(help="Candidate's capacity loss (0.10 = 10 % less capacity).", min=0, max=0.9),
]
_SimTrials = Annotated[int, typer.Option(help="Number of simulated gates.", min=1)]
_SimSeed = Annotated[int, typer.Option(help="Random seed (same seed, same figures).")]
_SimMode = Annotated[
    Literal["side-by-side", "stored"],
    typer.Option(help="side-by-side (what `perfgate run` does by default) or stored."),
]
_SimNoise = Annotated[
    str | None,
    typer.Option(
        help="Noise profile: shared (default), quiet, none, or a held-out one: heavy-tail, step-change, throttled, deploy-offset, proc-drift, generator-cost."
    ),
]
_SimRepeat = Annotated[
    int,
    typer.Option(
        help="Replicate design with K searches per build (--repeat of the gate).", min=1, max=50
    ),
]
_SimCalibrated = Annotated[
    bool, typer.Option(help="Use a noise model calibrated by simulated A/A runs.")
]
_SimInterleave = Annotated[
    Literal["simultaneous", "alternate"],
    typer.Option(help="Side by side: simultaneous (default) or alternate windows."),
]
_SimCrossover = Annotated[
    bool,
    typer.Option(
        "--crossover/--no-crossover",
        help="Swap the two deployments or not (--no-crossover is --staging target).",
    ),
]
_SimSimStaging = Annotated[
    Literal["embedded", "kubernetes", "target"],
    typer.Option(
        "--staging",
        help="How the two deployments swap: embedded (default: a restart, ~1 s), kubernetes (a rollout, new pods), target (--baseline-target: no swap).",
    ),
]
_SimCoverage = Annotated[
    bool,
    typer.Option(
        "--coverage",
        help="Also measure how often the floor rule's users interval covers the true users at the SLO (a minute or more of CPU).",
    ),
]
_SimSwapSeconds = Annotated[
    float | None,
    typer.Option(
        help="Seconds one swap costs (default: 1 embedded, 60 kubernetes).", min=0, max=3600
    ),
]
_SimTable = Annotated[
    bool,
    typer.Option("--table", help="Every regression size from 0 to 20 % (ignores --regression)."),
]
_SimWorkers = Annotated[int, typer.Option(help="Processes to spread the trials over.", min=1)]
_SimSearch = Annotated[
    bool,
    typer.Option(
        "--search", help="Compare the adaptive search with a linear ramp instead (time, error)."
    ),
]
_SimAsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@app.command()
def simulate(
    regression: _SimRegression = 0.0,
    trials: _SimTrials = 200,
    seed: _SimSeed = 1,
    mode: _SimMode = "side-by-side",
    noise: _SimNoise = None,
    repeat: _SimRepeat = 1,
    calibrated: _SimCalibrated = False,
    interleave: _SimInterleave = "simultaneous",
    crossover: _SimCrossover = True,
    sim_staging: _SimSimStaging = "embedded",
    coverage: _SimCoverage = False,
    swap_seconds: _SimSwapSeconds = None,
    strategy: StrategyOpt = None,
    table: _SimTable = False,
    workers: _SimWorkers = 1,
    search: _SimSearch = False,
    as_json: _SimAsJson = False,
) -> int:
    """Benchmark the verdict: whole gates (the same code as `perfgate run`) on simulated targets with known capacity and noise."""
    from perfgate import simulate as sim

    if search:
        print(json.dumps(sim.compare_search(seed=seed), indent=2))
        return EXIT_PASS
    options: dict[str, Any] = {
        "mode": mode,
        "noise": _choice(noise, "--noise", tuple(sim.NOISE_PROFILES)),
        "repeat": repeat,
        "calibrated": calibrated,
        "interleave": interleave,
        "crossover": crossover,
        "staging": sim_staging,
        "swap_s": swap_seconds,
        "coverage": coverage,
        "strategy": strategy,
        "workers": workers,
    }
    if table:
        out = sim.simulate_table(trials, seed, **options)
        print(json.dumps(out, indent=2) if as_json else sim.format_table(out))
        return EXIT_PASS
    out = sim.simulate(regression, trials, seed, **options)
    print(json.dumps(out, indent=2) if as_json else sim.format_result(out))
    return EXIT_PASS


# -- the reference exchange --------------------------------------------------------------------


@exchange_app.command("serve")
def exchange_serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = a free one).", min=0, max=65535)] = 8080,
    slots: Annotated[int | None, typer.Option(help="Requests in service at once.", min=1)] = None,
    service_ms: Annotated[
        float | None, typer.Option(help="Time each request holds a slot (ms).", min=0)
    ] = None,
    cache: Annotated[
        bool | None, typer.Option("--cache/--no-cache", help="Cache the order-book depth.")
    ] = None,
    config_json: Annotated[
        str | None, typer.Option(help="All capacity knobs as a JSON object.")
    ] = None,
) -> int:
    """Serve the reference exchange over HTTP/JSON until interrupted."""
    from perfgate.exchange import ExchangeConfig, serve

    try:
        knobs = json.loads(config_json) if config_json else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"--config-json: not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # e.g. an integer longer than Python's int parser accepts
        raise InputError(f"--config-json: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(knobs, dict):
        raise InputError("--config-json: expected a JSON object")
    for key, value in (("slots", slots), ("service_ms", service_ms), ("cache", cache)):
        if value is not None:
            knobs[key] = value
    try:
        config = ExchangeConfig.from_dict(knobs)
    except ValueError as exc:
        raise InputError(f"exchange config: {exc}") from None
    _install_sigterm()
    with contextlib.suppress(Interrupted):
        serve(
            host, port, config, on_listening=lambda url: print(f"serving on {url}", file=sys.stderr)
        )
    return EXIT_PASS


# -- staging housekeeping ----------------------------------------------------------------------


@staging_app.command("gc")
def staging_gc(
    older_than: Annotated[
        str, typer.Option(help="Only namespaces older than this (e.g. 6h, 30m).")
    ] = "6h",
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = False,
) -> int:
    """Delete leftover staging namespaces of crashed runs (only those perfgate created)."""
    from perfgate.staging.kubernetes import gc_namespaces, parse_age

    try:
        age_s = parse_age(older_than)
    except InputError as exc:
        raise InputError(f"--older-than: {exc}") from None
    deleted = gc_namespaces(
        older_than_s=age_s,
        kubeconfig=kubeconfig,
        context=context,
        log=lambda m: print(m, file=sys.stderr),
        dry_run=dry_run,
    )
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {len(deleted)} namespace(s)" + (": " + ", ".join(deleted) if deleted else ""))
    return EXIT_PASS


# -- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: one-line errors, documented exit codes."""
    code = _main(argv)
    sys.stdout.flush()
    sys.exit(code)


def _main(argv: list[str] | None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="perfgate")
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("perfgate: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except typer.TyperException as exc:  # usage errors: unknown option, bad value, missing command
        show = getattr(exc, "show", None)
        if show is not None:
            show(file=sys.stderr)
        else:
            print(f"perfgate: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except _Exit as exc:
        print(f"perfgate: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("perfgate: interrupted by SIGINT", file=sys.stderr)
        return EXIT_SIGINT
    except PerfgateError as exc:
        if _state["debug"]:
            traceback.print_exc()
        print(f"perfgate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        traceback.print_exc()
        print(
            "perfgate: internal error (a bug, not a verdict): please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return int(rv) if isinstance(rv, int) else EXIT_PASS
