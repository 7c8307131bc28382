"""Release history: the table, change points, the drift rule, `perfgate history`, mark-reference."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest

from perfgate import baseline as bl
from perfgate import gate
from perfgate import history as hist
from perfgate.cli import _main
from perfgate.gate import drift
from perfgate.gate.rules import combine
from perfgate.history.changepoints import e_divisive
from perfgate.history.table import Entry
from perfgate.models import (
    BaselineRef,
    GateSpec,
    Link,
    LookRecord,
    RuleResult,
    RunResult,
    Saturation,
    StepStats,
)
from perfgate.scenario import load_scenario

STEP = math.log(0.96)  # a 4 % capacity loss
STEPS_AT = (4, 7, 10)  # releases r4, r7, r10 (0-based rows) each lose 4 %
SIDE_BY_SIDE_SE = 0.003  # the default gate's spread of its estimate (docs/verdict.md §6: 0.27 %)


def _sat(x: float) -> Saturation:
    return Saturation(
        users=x / 2, throughput_rps=x, broken=True, reason="", throughput_ci=(x * 0.99, x * 1.01)
    )


def _step(users: int, p95: float) -> StepStats:
    return StepStats(
        users=users,
        duration_s=10,
        requests=1000,
        failures=0,
        throughput_rps=100.0,
        p50_ms=p95 / 2,
        p95_ms=p95,
        p99_ms=p95 * 1.2,
        error_rate=0.0,
        slo_ok=True,
    )


def _entries(changes: list[float], se: float | None, *, stored_sd: float = 0.0) -> list[Entry]:
    """Releases r0…r(n−1): r0 at 1,000 req/s, each next one ``exp(changes[i])`` times the last,
    gated side by side against its predecessor (``se``; None: no link, stored numbers only)."""
    rng = random.Random(5)
    out, level = [], 0.0
    for i, d in enumerate(changes):
        level += d
        x = 1000 * math.exp(level + rng.gauss(0, stored_sd))
        link = None
        if i and se is not None:
            link = Link(release=f"r{i - 1}", mode="side-by-side", log_ratio=d, se_log=se)
        out.append(
            Entry(
                release=f"r{i}",
                time=f"2026-01-{i + 1:02d}T10:00:00Z",
                source="baseline",
                verdict="pass",
                saturation=_sat(x),
                steps=(_step(200, 100 - 20 * level), _step(500, 250 - 50 * level)),
                link=link,
            )
        )
    return out


def _creep(noise: float = 0.0, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [
        0.0 if i == 0 else (STEP if i in STEPS_AT else 0.0) + float(rng.normal(0, noise))
        for i in range(12)
    ]


# ---------------------------------------------------------------------------------------------
# The drift rule catches the creep; the release-to-release rule lets each step through
# ---------------------------------------------------------------------------------------------


def _gate_release(k: int, changes: list[float], spec: GateSpec) -> tuple[str, RuleResult | None]:
    """Release rk gated against r(k−1) with the history r0…r(k−1) stored: (verdict, drift)."""
    history = hist.build("exchange", _entries(changes[:k], SIDE_BY_SIDE_SE))
    m = changes[k]
    # the release-to-release rule as the side-by-side gate decides it: a 4 % loss is credibly
    # within the allowed 10 % (its lower bound is far above 0.90)
    regression = RuleResult(
        name="regression",
        outcome="pass" if m - 2.33 * SIDE_BY_SIDE_SE > math.log(0.9) else "fail",
        message="regression: within the allowed 10 %",
    )
    look = LookRecord(
        index=1,
        pairs=6,
        ratio=math.exp(m),
        ratio_lo=0.0,
        ratio_hi=0.0,
        se_log=SIDE_BY_SIDE_SE,
        df=4,
        alpha_block=0.01,
        alpha_pass=0.01,
        outcome="pass",
        elapsed_s=60,
    )
    before = combine([regression])
    assert before.verdict == "pass"
    after = drift.with_drift(
        before, gate=spec, history=history, baseline_release=f"r{k - 1}", looks=(look,)
    )
    return after.verdict, next((r for r in after.rules if r.name == "drift"), None)


def test_drift_blocks_the_release_that_crosses_ten_percent_though_each_step_passed() -> None:
    changes = _creep()
    spec = GateSpec(max_drift=0.10)
    verdicts = {k: _gate_release(k, changes, spec) for k in range(1, 12)}

    # 4 %, 7.8 % below the best: pass; 11.5 % at r10 (the third step) and after: block
    assert [k for k, (v, _) in verdicts.items() if v == "block"] == [10, 11]
    _, rule = verdicts[10]
    assert (
        rule is not None
        and rule.outcome == "fail"
        and rule.value == pytest.approx(0.96**3, rel=1e-6)
    )
    # the reason names where the loss accumulated
    assert "r4 -4.0 %" in rule.message and "r7 -4.0 %" in rule.message
    assert "this release -4.0 %" in rule.message and "drift vs r0…r3" in rule.message
    # without gate.max_drift nothing changes
    assert _gate_release(10, changes, GateSpec()) == ("pass", None)


def test_drift_judges_against_the_marked_reference() -> None:
    changes = _creep()
    entries = _entries(changes[:8], SIDE_BY_SIDE_SE)
    history = hist.build("exchange", entries, reference="r5")
    spec = GateSpec(max_drift=0.05)
    rule = drift.drift_rule(
        gate=spec, history=history, baseline_release="r7", m=STEP, se=SIDE_BY_SIDE_SE
    )
    # r5 → r7 lost 4 %, this release 4 % more: 7.8 % > 5 %, credibly
    assert rule.outcome == "fail" and "drift vs r5 (the marked reference)" in rule.message
    assert rule.value == pytest.approx(0.96**2, rel=1e-6)


def test_run_gate_adds_the_drift_rule_to_a_simulated_gate() -> None:
    """The whole gate (simulated deployments): a 4 % loss passes release to release, and the
    drift rule blocks it after three earlier 4 % steps."""
    from perfgate.simulate import harness

    cfg = harness._config(
        0.04,
        1,
        mode="side-by-side",
        repeat=1,
        calibrated=False,
        preset="exchange",
        noise=None,
        strategy=None,
    )
    rng = random.Random("history-drift")
    sides = harness.SimSides(cfg.preset, cfg.ramp, cfg.noise, rng, 0.04)
    changes = [0.0, 0.0, STEP, 0.0, STEP, 0.0, STEP]
    history = hist.build("exchange", _entries(changes, SIDE_BY_SIDE_SE))
    inputs = gate.GateInputs(
        slo=cfg.preset.slo,
        ramp=cfg.ramp,
        gate=dataclasses.replace(cfg.preset.gate, min_users=None, max_drift=0.10),
        mode="side-by-side",
        baseline=dataclasses.replace(harness._hint_ref(cfg.preset), release="r6"),
        seed=7,
        history=history,
    )
    out = gate.run_gate(sides, inputs)
    outcomes = {r.name: r.outcome for r in out.result.rules}
    assert outcomes["regression"] == "pass"
    assert outcomes["drift"] == "fail" and out.result.verdict == "block"


# ---------------------------------------------------------------------------------------------
# Change points
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_change_points_at_the_three_steps(seed: int) -> None:
    history = hist.build("exchange", _entries(_creep(SIDE_BY_SIDE_SE, seed), SIDE_BY_SIDE_SE))
    assert [p.release for p in history.change_points] == ["r4", "r7", "r10"]
    assert all(p.change == pytest.approx(-0.04, abs=0.01) for p in history.change_points)
    assert [r.release for r in history.rows if r.change_point] == ["r4", "r7", "r10"]


@pytest.mark.parametrize(("se", "stored_sd"), [(0.0027, 0.0), (0.0215, 0.0), (None, 0.069)])
def test_no_change_points_in_noise_only_histories(se: float | None, stored_sd: float) -> None:
    """Side by side at the default's and the worst held-out profile's spread, and stored numbers
    only at the stored arm's (docs/verdict.md §6); docs/history.md has the 500-history rates."""
    rng = np.random.default_rng(11)
    found = []
    for trial in range(25):
        noise = se if se is not None else 0.0
        changes = [0.0, *rng.normal(0, noise, 11)]
        entries = _entries(changes, se, stored_sd=stored_sd)
        found += [p.release for p in hist.build("exchange", entries, seed=trial).change_points]
    assert found == []


def test_e_divisive_is_deterministic_and_finds_a_single_step() -> None:
    levels = [0.0] * 6 + [-0.05] * 6
    first = e_divisive(levels, [0.003] * 12, seed=3)
    assert first == e_divisive(levels, [0.003] * 12, seed=3)
    assert [s.index for s in first] == [6] and first[0].p_value <= 0.05


# ---------------------------------------------------------------------------------------------
# The store: links, the reference mark, the CLI
# ---------------------------------------------------------------------------------------------


def _result(release: str, rps: float, against: str | None, ratio: float) -> RunResult:
    base = None
    if against is not None:
        base = BaselineRef(release=against, saturation=_sat(1000.0), mode="side-by-side")
    look = LookRecord(
        index=1,
        pairs=6,
        ratio=ratio,
        ratio_lo=ratio * 0.98,
        ratio_hi=ratio * 1.02,
        se_log=0.004,
        df=8,
        alpha_block=0.01,
        alpha_pass=0.01,
        outcome="pass",
        elapsed_s=60,
    )
    return RunResult(
        scenario="shop",
        release=release,
        verdict="pass",
        reasons=(),
        saturation=_sat(rps),
        baseline=base,
        steps=(_step(100, 80.0), _step(300, 200.0)),
        generator={},
        started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:05:00Z",
        perfgate_version="0.1.0",
        looks=(look,) if base is not None else (),
    )


def _store(tmp_path: Path) -> Path:
    store_dir = tmp_path / "baselines"
    for i, (rps, ratio) in enumerate([(1000.0, 1.0), (980.0, 0.96), (990.0, 0.96)]):
        result = _result(f"v{i}", rps, f"v{i - 1}" if i else None, ratio)
        path = bl.store_baseline(result, store_dir)
        data = json.loads(path.read_text())
        data["created_at"] = f"2026-01-0{i + 1}T00:00:00Z"  # a history without sleeping
        path.write_text(json.dumps(data))
    return store_dir


def test_stored_baselines_carry_their_gate_link(tmp_path: Path) -> None:
    store_dir = _store(tmp_path)
    stored = bl.load_baseline(store_dir / "shop" / "v1.json")
    assert stored.link == Link(
        release="v0", mode="side-by-side", log_ratio=math.log(0.96), se_log=0.004
    )
    rows = hist.load(store_dir, "shop").history.rows
    # levels follow the side-by-side links (0.96 · 0.96), not the stored numbers (990/1000)
    assert [r.change_how for r in rows] == ["", "side-by-side", "side-by-side"]
    assert math.exp(rows[-1].level_log) == pytest.approx(0.9216)
    assert rows[-1].p95_ms[0][1] is not None


def test_cli_history_table_json_csv_and_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = _store(tmp_path)
    chart = tmp_path / "h.svg"
    assert _main(["history", "--baseline-dir", str(store_dir), "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "shop:" in out and "v2" in out and "-7.8 %" in out
    # two 4 % steps measured side by side (0.4 % SE each): each is a change point
    assert "change point: v1 (-4.0 %" in out and "change point: v2 (-4.0 %" in out
    assert chart.read_text().startswith("<?xml") and "<svg" in chart.read_text()

    assert _main(["history", "--baseline-dir", str(store_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["release"] for r in doc["rows"]] == ["v0", "v1", "v2"]
    assert [p["release"] for p in doc["change_points"]] == ["v1", "v2"]
    assert doc["change_points"][0]["change_pct"] == -4.0

    assert _main(["history", "--baseline-dir", str(store_dir), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("release,time,source") and len(lines) == 4


def test_cli_history_on_the_repository_baselines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parent.parent / "baselines"
    assert _main(["history", "--baseline-dir", str(repo), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"] == "exchange" and doc["rows"][0]["release"] == "reference"
    assert doc["change_points"] == []


def test_mark_reference_is_stored_and_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = _store(tmp_path)
    args = ["baseline", "mark-reference", "v1", "--scenario", "shop", "--baseline-dir"]
    assert _main([*args, str(store_dir)]) == 0
    assert bl.read_reference(store_dir, "shop") == "v1"
    # the marker is not a release
    assert [b.release for b in bl.list_baselines(store_dir, "shop")] == ["v0", "v1", "v2"]
    history = hist.load(store_dir, "shop").history
    assert history.reference == "v1" and [r.reference for r in history.rows] == [0, 1, 0]
    capsys.readouterr()
    assert (
        _main(
            [
                "baseline",
                "mark-reference",
                "v9",
                "--scenario",
                "shop",
                "--baseline-dir",
                str(store_dir),
            ]
        )
        == 2
    )
    assert "no baseline for release 'v9'" in capsys.readouterr().err


def test_cli_history_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_dir = _store(tmp_path)
    (store_dir / "other").mkdir()
    assert _main(["history", "--baseline-dir", str(store_dir)]) == 2
    assert "several scenarios" in capsys.readouterr().err
    assert _main(["history", "--baseline-dir", str(store_dir), "--scenario", "nope"]) == 2
    assert "no releases of scenario 'nope'" in capsys.readouterr().err
    args = ["history", "--baseline-dir", str(store_dir), "--scenario", "shop", "--json", "--csv"]
    assert _main(args) == 2


def test_scenario_gate_max_drift(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    text = "name: s\nusers: {requests: [{path: /}]}\nslo: {p95_ms: 100}\ngate: {max_drift: %s}\n"
    path.write_text(text % "0.1")
    assert load_scenario(path).gate.max_drift == 0.1
    path.write_text(text % "-1")
    with pytest.raises(Exception, match=r"gate\.max_drift"):
        load_scenario(path)


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def test_history_and_mark_reference_on_a_git_branch_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same commands on `git+<url>#<branch>`: the releases are read from the branch, the
    reference mark is committed and pushed to it."""
    remote = tmp_path / "remote.git"
    _git("init", "-q", "--bare", str(remote))
    folder = _store(tmp_path)  # three stored releases, pushed as a branch in one commit
    _git("init", "-q", "-b", "perfgate-baselines", cwd=folder)
    _git("add", ".", cwd=folder)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baselines", cwd=folder)
    _git("push", "-q", str(remote), "perfgate-baselines", cwd=folder)
    spec = f"git+file://{remote}#perfgate-baselines"

    args = ["baseline", "mark-reference", "v1", "--scenario", "shop", "--baseline-dir", spec]
    assert _main(args) == 0
    log = _git("--git-dir", str(remote), "log", "--format=%s", "perfgate-baselines")
    assert "v1 marked as the drift reference of shop" in log
    capsys.readouterr()

    assert _main(["history", "--baseline-dir", spec, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["release"] for r in doc["rows"]] == ["v0", "v1", "v2"]
    assert doc["reference"] == "v1" and doc["rows"][1]["reference"] is True
    assert [r["change_how"] for r in doc["rows"]] == ["", "side-by-side", "side-by-side"]


def test_cli_history_with_saved_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--results adds every full run's result.json (a blocked one too); a broken one is named
    and left out, not fatal."""
    from perfgate.report.files import result_json_text

    store_dir = _store(tmp_path)
    reports = tmp_path / "reports" / "shop"
    blocked = dataclasses.replace(
        _result("v3", 850.0, "v2", 0.86), verdict="block", finished_at="2026-01-05T00:00:00Z"
    )
    (reports / "v3-1").mkdir(parents=True)
    (reports / "v3-1" / "result.json").write_text(result_json_text(blocked))
    (reports / "broken").mkdir()
    (reports / "broken" / "result.json").write_text("{")
    args = ["history", "--baseline-dir", str(store_dir), "--results", "--report-dir"]
    assert _main([*args, str(tmp_path / "reports"), "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)["rows"]
    assert [(r["release"], r["source"], r["verdict"]) for r in rows][-1] == (
        "v3",
        "result",
        "block",
    )
    assert rows[-1]["change_how"] == "side-by-side"
    assert "left out" in captured.err and "broken" in captured.err


def test_the_report_history_section_marks_change_points(tmp_path: Path) -> None:
    try:
        from report_fixtures import make_history, make_result
    except ImportError:  # tests/ imported as a package
        from tests.report_fixtures import make_history, make_result
    from perfgate.report import write_report

    html = write_report(make_result(), tmp_path, history=make_history()).html.read_text()
    section = html[html.index('id="history"') :]
    assert "Change points (E-divisive means): v1.4.0 (+18.0 %)" in section
    assert "4 stored release(s)" in section and "level vs v1.1.0" in section


def test_resources_at_the_boundary_where_telemetry_recorded_them() -> None:
    from perfgate.history.table import to_csv
    from perfgate.models import ResourceReading, StepResources

    def with_cpu(step: StepStats, cores: float, util: float) -> StepStats:
        reading = ResourceReading(
            name="exchange slot pool",
            source="exchange",
            kind="utilisation",
            value=util * 8,
            limit=8,
            utilisation=util,
        )
        return dataclasses.replace(
            step, resources=StepResources(readings=(reading,), cpu_cores=cores)
        )

    entries = _entries([0.0, STEP], SIDE_BY_SIDE_SE)
    first = entries[0]
    steps = (with_cpu(first.steps[0], 0.4, 0.5), with_cpu(first.steps[1], 0.9, 0.97))
    entries[0] = dataclasses.replace(first, steps=steps)
    history = hist.build("exchange", entries)
    # the boundary is the highest passing level at or below the saturation point (500 users)
    assert history.rows[0].cpu_cores == 0.9
    assert history.rows[0].utilisation == (("exchange slot pool", 0.97),)
    assert history.rows[1].cpu_cores is None  # no telemetry recorded
    lines = to_csv(history.rows, history.p95_levels).splitlines()
    assert lines[0].endswith(",cpu_cores,utilisation: exchange slot pool")
    assert lines[1].endswith(",0.9,0.97") and lines[2].endswith(",,")


def test_the_pipeline_hands_the_gate_the_stored_history(tmp_path: Path) -> None:
    """preflight reads the history from the store; the gate's inputs carry it (plain data)."""
    from perfgate.pipeline.options import RunOptions
    from perfgate.pipeline.run import Evidence, _inputs, preflight

    store_dir = _store(tmp_path)
    bl.mark_reference(store_dir, "shop", "v0")
    scenario = tmp_path / "shop.yaml"
    scenario.write_text(
        "name: shop\nusers: {requests: [{path: /}]}\nslo: {p95_ms: 100}\ngate: {max_drift: 0.1}\n"
    )
    opts = RunOptions(
        scenario=scenario, baseline_dir=store_dir, report_dir=tmp_path / "r", release="v3"
    )
    plan = preflight(opts)
    inputs = _inputs(plan, Evidence(mode=plan.mode))
    assert inputs.gate.max_drift == 0.1 and inputs.history is not None
    assert [r.release for r in inputs.history.rows] == ["v0", "v1", "v2"]
    assert inputs.history.reference == "v0"


def test_a_corrupt_drift_reference_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = _store(tmp_path)
    (store_dir / "shop" / bl.REFERENCE_FILE).write_text("{")
    assert _main(["history", "--baseline-dir", str(store_dir), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["reference"] is None
    assert "left out" in captured.err and "drift reference" in captured.err
    with pytest.raises(bl.BaselineError, match=r"drift reference .*not valid JSON"):
        bl.read_reference(store_dir, "shop")


def test_drift_blocks_a_creep_in_a_short_history() -> None:
    """Three stored releases, each 4 % below the one before (as measured side by side by the
    real CLI, docs/history.md §4), and a candidate 4 % below the last: 11.5 % in all."""
    history = hist.build("exchange", _entries([0.0, STEP, STEP], 0.0008))
    assert [p.release for p in history.change_points] == ["r1", "r2"]
    rule = drift.drift_rule(
        gate=GateSpec(max_drift=0.10), history=history, baseline_release="r2", m=STEP, se=0.0008
    )
    assert rule.outcome == "fail" and "drift vs r0 (the best release" in rule.message
