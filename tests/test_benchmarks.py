"""The benchmark scripts' pure helpers and child handling (no load: the scripts run for minutes)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common as c  # noqa: E402
import generator_overhead  # noqa: E402
import real_aa  # noqa: E402
import real_gate  # noqa: E402
import run_default  # noqa: E402
import saturation_accuracy  # noqa: E402


def test_md_table_has_a_header_rule_and_one_line_per_row() -> None:
    text = c.md_table(("a", "b"), [(1, 2), ("x", None)])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| x | None |"]


def test_spread_is_median_with_range_and_skips_missing() -> None:
    assert c.spread([3.0, None, 1.0, 2.0]) == "2 (1–3)"
    assert c.spread([None]) == "–"
    assert c.fmt(0.123, 1, pct=True, sign=True) == "+12.3 %"


def test_run_stops_a_child_that_outlives_its_timeout() -> None:
    t0 = time.perf_counter()
    done = c.run((sys.executable, "-c", "import time; time.sleep(30)"), timeout_s=0.5)
    assert done.timed_out
    assert done.rc != 0
    assert time.perf_counter() - t0 < 10


def test_parse_result_tolerates_lines_before_the_json() -> None:
    assert c.parse_result('note\n{"verdict": "pass"}\n') == {"verdict": "pass"}
    assert c.parse_result("") is None


def test_load_seconds_is_the_end_of_the_last_window() -> None:
    steps = [{"started_s": 1.0, "duration_s": 3.0}, {"started_s": 5.0, "duration_s": 3.5}]
    assert c.load_seconds({"steps": steps}) == 8.5


def test_single_get_scenario_is_a_valid_perfgate_scenario(tmp_path: Path) -> None:
    from perfgate.scenario import load_scenario

    data = c.single_get_scenario(
        name="bench",
        path="/health",
        ramp={"start_users": 4, "step_users": 1, "max_users": 4, "step_seconds": 5},
        slo_p95_ms=100.0,
        workers=2,
    )
    scen = load_scenario(c.write_scenario(tmp_path / "s.yaml", data))
    assert scen.ramp.max_users == 4
    assert scen.load.workers == 2
    assert scen.users.requests[0].path == "/health"


def test_clopper_pearson_matches_the_exact_binomial_interval() -> None:
    lo, hi = real_aa.clopper_pearson(0, 10)  # type: ignore[misc]
    assert lo == 0.0
    assert hi == pytest.approx(0.3085, abs=1e-4)
    lo, hi = real_aa.clopper_pearson(5, 10)  # type: ignore[misc]
    assert (lo, hi) == pytest.approx((0.1871, 0.8129), abs=1e-4)


def test_phases_are_read_from_the_progress_lines() -> None:
    stderr = (
        "   0.0s provisioning staging (embedded)\n   1.2s ramping users against http://x\n"
        "  95.3s ok   users   600 …\n  97.0s analysing\n  97.1s writing the report\n"
    )
    assert run_default.phases(stderr) == {
        "provisioning": 0.0,
        "ramping": 1.2,
        "analysing": 97.0,
        "writing the report": 97.1,
    }


def test_parse_triples() -> None:
    assert saturation_accuracy.parse_triples("2:5:250,8:10:400") == (
        (2, 5.0, 250.0),
        (8, 10.0, 400.0),
    )


def test_paired_ratios_only_compare_tools_of_the_same_repetition() -> None:
    runs = [
        {"tool": "a", "rep": 0, "server_rps": 90.0},
        {"tool": "b", "rep": 0, "server_rps": 100.0},
        {"tool": "a", "rep": 1, "server_rps": 50.0},  # b missing in rep 1: no ratio
    ]
    assert generator_overhead._paired(runs, "a", "b") == [0.9]


def test_tool_reports_parse_wrk_and_locust_output(tmp_path: Path) -> None:
    wrk = "  Latency Distribution\n     50%  159.00us\n...\nRequests/sec:  53484.13\n"
    assert generator_overhead.tool_report("wrk", wrk, tmp_path)["rps"] == pytest.approx(53484.13)
    stats = [
        {"num_requests": 900, "num_failures": 0, "start_time": 10.0, "last_request_timestamp": 19.0}
    ]
    (tmp_path / "locust-stats.json").write_text(json.dumps(stats))
    assert generator_overhead.tool_report("locust", "", tmp_path)["rps"] == pytest.approx(100.0)


def test_real_gate_scenario_and_exchanges_are_valid_and_seeded_apart(tmp_path: Path) -> None:
    from perfgate.exchange import ExchangeConfig
    from perfgate.scenario import load_scenario

    args = real_gate.parse_args([])
    scen = load_scenario(c.write_scenario(tmp_path / "s.yaml", real_gate.scenario(args)))
    assert (scen.ramp.strategy, scen.ramp.start_users, scen.ramp.max_users) == ("adaptive", 20, 600)
    assert (scen.gate.max_regression, scen.gate.budget_minutes) == (0.10, 4.0)
    seeds = []
    for arm in real_gate.ARMS:
        for trial in (1, 2):
            cand, base = real_gate.exchange_configs(args, arm, trial)
            assert ExchangeConfig.from_dict(cand).episode_per_s == 0.05  # valid options
            assert ExchangeConfig.from_dict(base).random_seed == cand["random_seed"] + 1
            assert base["service_ms"] == 10.0 and cand["drift_sd"] == 0.03
            loss = 1 - base["service_ms"] / cand["service_ms"]
            assert loss == pytest.approx(0.10 if arm == "loss" else 0.0)
            seeds += [cand["random_seed"], base["random_seed"]]
    assert len(set(seeds)) == len(seeds)  # every process of every gate drifts on its own


def test_real_gate_reads_the_last_look_and_counts_with_intervals() -> None:
    looks = [
        {"pairs": 6, "ratio": 0.95, "ratio_lo": 0.85, "ratio_hi": 1.05, "outcome": "continue"},
        {"pairs": 10, "ratio": 0.91, "ratio_lo": 0.87, "ratio_hi": 0.95, "outcome": "block"},
    ]
    result = {"verdict": "block", "looks": looks, "diagnostics": {"gate_ratio": 0.91}}
    row = real_gate.summarise_result(result)
    assert (row["ratio_lo"], row["ratio_hi"], row["gate_ratio"]) == (0.87, 0.95, 0.91)
    assert real_gate.summarise_result({})["verdict"] is None
    gates = [
        {"verdict": v, "wall_s": w, "gate_ratio": None}
        for v, w in (("block", 60.0), ("pass", 80.0), ("block", 100.0), (None, 5.0))
    ]
    summary = real_gate.arm_summary(gates)
    assert summary["block"]["count"] == 2 and summary["failed"] == 1
    assert summary["block"]["ci95"] == pytest.approx(real_aa.clopper_pearson(2, 4))
    assert (summary["mean_wall_s"], summary["max_wall_s"]) == (61.2, 100.0)


def test_stream_overhead_scenarios_differ_only_by_the_streams(tmp_path: Path) -> None:
    import stream_overhead

    from perfgate.scenario import load_scenario

    plain, streaming = (
        load_scenario(
            c.write_scenario(tmp_path / f"{s}.yaml", stream_overhead.scenario(s, 50, 6.0, 0.5))
        )
        for s in (False, True)
    )
    assert plain.users.streams is None and streaming.users.streams is not None
    assert plain.users.requests == streaming.users.requests
    assert plain.ramp == streaming.ramp and plain.ramp.max_users == 50
    assert streaming.slo.event_p95_ms is not None and plain.slo.event_p95_ms is None
