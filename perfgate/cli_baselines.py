"""``perfgate baseline list|show|promote|diff|mark-reference``, ``perfgate history`` and
``perfgate ci comment`` (wired in by :mod:`perfgate.cli`, which maps their errors to exit
codes): thin commands over the baseline
store (:func:`perfgate.store.open_store`) and :mod:`perfgate.ci`. Heavy modules are imported
inside the commands, so ``perfgate --help`` stays quick.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from perfgate.errors import EXIT_INPUT, EXIT_PASS, InputError, OutputError

__all__ = ["GateBaselineDirOpt", "baseline_app", "ci_app", "history"]

baseline_app = typer.Typer(
    help="List, show, promote and diff stored baselines; mark the drift reference.",
    no_args_is_help=True,
)
ci_app = typer.Typer(
    help="CI helpers: the pull/merge request comment (used by action.yml and the GitLab template).",
    no_args_is_help=True,
)

STORE_HELP = (
    "Where baselines are stored: a folder, or git+<remote-url>#<branch> (a branch of a git "
    "repository, fetched at the start and pushed to on --promote)."
)
GateBaselineDirOpt = Annotated[
    str,
    typer.Option(
        "--baseline-dir",
        envvar="PERFGATE_BASELINE_DIR",
        metavar="DIR|git+URL#BRANCH",
        help=STORE_HELP,
        show_default=True,
    ),
]

# -- baselines ---------------------------------------------------------------------------------

BaselineDirOpt = GateBaselineDirOpt


ScenarioNameOpt = Annotated[
    str,
    typer.Option("--scenario", help="Scenario name (its `name:`).", show_default=True),
]


@baseline_app.command("list")
def baseline_list(
    scenario: Annotated[
        str | None, typer.Option("--scenario", help="Scenario name (default: every scenario).")
    ] = None,
    baseline_dir: BaselineDirOpt = "baselines",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: baselines and problems.")
    ] = False,
) -> int:
    """List stored baselines, oldest first: release, saturation, date, fingerprint."""
    from perfgate import baseline, store

    scans = baseline.scan_store(baseline_dir, scenario)
    names = list(scans)
    problems = sum(len(scan.problems) for scan in scans.values())
    if as_json:
        print(json.dumps(baseline.list_record(scans), indent=2))
        return EXIT_INPUT if problems else EXIT_PASS
    if not names:
        print(f"no baselines under {store.describe_spec(baseline_dir)}")
    for name, scan in scans.items():
        print(f"{name}:")
        print(baseline.format_list(scan.baselines, problems=scan.problems))
    return EXIT_INPUT if problems else EXIT_PASS


@baseline_app.command("show")
def baseline_show(
    release: Annotated[
        str | None, typer.Argument(help="Release name or baseline file (default: the newest).")
    ] = None,
    scenario: ScenarioNameOpt = "exchange",
    baseline_dir: BaselineDirOpt = "baselines",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the baseline file's JSON as stored.")
    ] = False,
) -> int:
    """Show one stored baseline in full."""
    from perfgate import baseline, store

    with store.open_store(baseline_dir) as opened:
        if release is None:
            items = baseline.list_baselines(opened.root, scenario)
            if not items:
                raise InputError(
                    f"no baselines for scenario {scenario!r} under "
                    f"{store.describe_spec(baseline_dir)}"
                )
            b = items[-1]
        else:
            b = baseline.resolve_baseline(opened.root, scenario, release)
        shown = (
            baseline.show_json(b)
            if as_json
            else baseline.format_show(b, where=opened.describe(b.path))
        )
        print(shown)
    return EXIT_PASS


@baseline_app.command("promote")
def baseline_promote(
    result_json: Annotated[Path, typer.Argument(help="result.json of a passing run.")],
    baseline_dir: BaselineDirOpt = "baselines",
    force: Annotated[
        bool, typer.Option(help="Overwrite an existing baseline of that release.")
    ] = False,
) -> int:
    """Store a saved run as its scenario's newest baseline (same safety as `run --promote`; a git store is committed and pushed)."""
    from perfgate import baseline, store

    with store.open_store(baseline_dir, log=lambda m: print(m, file=sys.stderr)) as opened:
        where = baseline.promote(result_json, opened, force=force)
    print(f"stored {where}")
    return EXIT_PASS


@baseline_app.command("diff")
def baseline_diff(
    release_a: Annotated[str, typer.Argument(help="Older release (name or file).")],
    release_b: Annotated[str, typer.Argument(help="Newer release (name or file).")],
    scenario: ScenarioNameOpt = "exchange",
    baseline_dir: BaselineDirOpt = "baselines",
) -> int:
    """Compare two stored baselines: saturation change, SLO and fingerprint differences, common levels."""
    from perfgate import baseline, store

    with store.read_only(baseline_dir) as folder:
        a = baseline.resolve_baseline(folder, scenario, release_a)
        b = baseline.resolve_baseline(folder, scenario, release_b)
    print(baseline.format_diff(baseline.diff(a, b)))
    return EXIT_PASS


@baseline_app.command("mark-reference")
def baseline_mark_reference(
    release: Annotated[str, typer.Argument(help="A stored release of the scenario.")],
    scenario: ScenarioNameOpt = "exchange",
    baseline_dir: BaselineDirOpt = "baselines",
) -> int:
    """Mark a stored release as the reference the drift rule (gate.max_drift) judges against (a git store is committed and pushed)."""
    from perfgate import baseline, store

    with store.open_store(baseline_dir, log=lambda m: print(m, file=sys.stderr)) as opened:
        path = opened.publish(
            lambda root: baseline.mark_reference(root, scenario, release),
            message=f"perfgate: {release} marked as the drift reference of {scenario}",
            keep_to=Path("unpushed-baseline"),
        )
        where = opened.describe(path)
    print(f"marked {release} as the drift reference of {scenario}: {where}")
    return EXIT_PASS


# -- history -----------------------------------------------------------------------------------


def _history_scenario(scenario: str | None, folder: Path, spec: str) -> str:
    from perfgate import baseline, store

    if scenario:
        return scenario
    names = baseline.scenario_names(folder)
    where = store.describe_spec(spec)
    if len(names) == 1:
        return names[0]
    if not names:
        raise InputError(f"no baselines under {where}")
    raise InputError(
        f"several scenarios under {where} ({', '.join(names)}): name one with --scenario"
    )


def history(
    scenario: Annotated[
        str | None,
        typer.Option("--scenario", help="Scenario name (default: the only one stored)."),
    ] = None,
    baseline_dir: BaselineDirOpt = "baselines",
    results: Annotated[
        bool,
        typer.Option("--results", help="Also every full run's result.json under --report-dir."),
    ] = False,
    report_dir: Annotated[
        Path, typer.Option(help="Where run folders are written.", show_default=True)
    ] = Path("reports"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the table and its change_points as JSON.")
    ] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    chart: Annotated[
        Path | None,
        typer.Option(
            help="Write the chart (SVG) here (default: <report-dir>/<scenario>/history.svg)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the change points' permutation test.")] = 0,
) -> int:
    """Every stored release of a scenario as one table, its change points, and a chart; --json/--csv export it."""
    from perfgate import history as hist
    from perfgate import store
    from perfgate.history.text import format_history

    if as_json and as_csv:
        raise InputError("--json and --csv: choose one")
    with store.read_only(baseline_dir) as folder:
        name = _history_scenario(scenario, folder, baseline_dir)
        loaded = hist.load(folder, name, report_dir=report_dir if results else None, seed=seed)
    for path, message in loaded.problems:
        print(f"perfgate: warning: left out {path}: {message}", file=sys.stderr)
    if not loaded.history.rows:
        raise InputError(
            f"no releases of scenario {name!r} under {store.describe_spec(baseline_dir)}"
        )
    if as_json:
        print(json.dumps(hist.to_json(loaded.history), indent=2, ensure_ascii=False))
        return EXIT_PASS
    if as_csv:
        sys.stdout.write(hist.to_csv(loaded.history))
        return EXIT_PASS
    from perfgate.report import history_svg, inside

    print(format_history(loaded.history))
    # --chart is the user's own path; the default one must not leave --report-dir through a link
    out = chart or report_dir / store.safe_component(name, "scenario") / "history.svg"
    if chart is None:
        inside(report_dir, out.parent, "the history chart")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write the history chart to {out}: {exc.strerror}") from exc
    store.write_text(out, history_svg(loaded.history), what="history chart")
    print(f"chart: {out}")
    return EXIT_PASS


# -- CI ----------------------------------------------------------------------------------------


@ci_app.command("comment")
def ci_comment(
    result_json: Annotated[
        Path | None, typer.Argument(help="result.json of the run (omit with --failed).")
    ] = None,
    post: Annotated[
        bool,
        typer.Option(
            "--post",
            help="Create the comment on this job's pull request (GitHub: $GITHUB_TOKEN) or merge request (GitLab: $PERFGATE_GITLAB_TOKEN), or update the one an earlier run posted.",
        ),
    ] = False,
    number: Annotated[
        int | None, typer.Option(help="Pull/merge request number (default: from the CI's event).")
    ] = None,
    report_url: Annotated[
        str | None, typer.Option(help="Link to the report (default: this CI run).")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Which comment to update (default: the scenario's name)."),
    ] = None,
    failed: Annotated[
        int | None,
        typer.Option(
            help="The run stopped before a verdict with this exit code: say so instead (needs --key).",
            min=1,
        ),
    ] = None,
) -> int:
    """Print the pull request comment for a run (verdict, deciding rule, change); --post creates or updates it."""
    from perfgate import ci

    url = report_url if report_url is not None else ci.env_report_url(os.environ)
    if failed is not None:
        if not key:
            raise InputError("ci comment --failed: give --key (the comment to replace)")
        body = ci.failure_body(failed, key=key, report_url=url)
    elif result_json is None:
        raise InputError("ci comment: give RESULT_JSON, or --failed CODE --key KEY")
    else:
        from perfgate.report import load_result

        body = ci.comment_body(load_result(result_json), report_url=url, key=key or "")
    if not post:
        sys.stdout.write(body)
        return EXIT_PASS
    done, cid = ci.upsert_comment(ci.forge_from_env(os.environ, number=number), body)
    print(f"perfgate: {done} comment {cid}", file=sys.stderr)
    return EXIT_PASS
