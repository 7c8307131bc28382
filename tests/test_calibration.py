"""The noise model: estimation from A/A runs, and its atomic storage beside the baselines."""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics

import pytest

from perfgate.calibration import (
    MIN_RUNS,
    NoiseModel,
    default_noise,
    estimate,
    format_noise,
    load_noise,
    noise_path,
    required_runs,
    save_noise,
)
from perfgate.errors import BaselineError, OutputError
from perfgate.models import Saturation


def run(rps: float, users: float = 300.0, censored: str = "no") -> Saturation:
    return Saturation(
        users=users,
        throughput_rps=rps,
        broken=censored != "above_max",
        reason="",
        censored=censored,  # type: ignore[arg-type]
    )


def test_estimate_from_known_runs() -> None:
    values = [1000.0, 1030.0, 980.0, 1010.0, 995.0, 1040.0]
    model = estimate([run(v) for v in values], scenario="exchange")
    logs = [math.log(v) for v in values]
    assert model.sd_log == pytest.approx(statistics.stdev(logs))
    assert model.df == len(values) - 1
    diffs = [b - a for a, b in itertools.pairwise(logs)]
    assert model.pair_sd_log == pytest.approx(math.sqrt(sum(d * d for d in diffs) / len(diffs)))
    assert 1 <= model.pair_df < len(diffs)
    assert model.source == "calibrated"
    assert model.values_rps == tuple(values)
    assert model.scenario == "exchange"
    assert model.created_at


def test_successive_differences_ignore_slow_drift() -> None:
    # a steady upward drift inflates the run-to-run SD but not the consecutive-pair spread
    values = [1000.0 * (1.02**i) for i in range(10)]
    model = estimate([run(v) for v in values])
    assert model.pair_sd_log == pytest.approx(math.log(1.02), rel=1e-9)
    assert model.sd_log > 2 * model.pair_sd_log


def test_sessions_accumulate_and_drift_enters_only_the_run_to_run_spread() -> None:
    day1 = estimate([run(v) for v in (1000, 1010, 990, 1005)])
    day2 = estimate([run(v) for v in (900, 910, 890, 905)], previous=day1)  # the machine drifted
    assert day2.sessions == (day1.values_rps, (900.0, 910.0, 890.0, 905.0))
    assert day2.runs == 8 and len(day2.values_rps) == 8
    assert day2.df == 7
    # within each day the consecutive pairs are as tight as before; across days they are not
    assert day2.pair_sd_log == pytest.approx(day1.pair_sd_log, rel=0.1)
    assert day2.sd_log > 3 * day1.sd_log
    assert "2 sessions" in day2.describe()


def test_censored_runs_are_left_out_and_counted() -> None:
    runs = [run(1000), run(1010), run(2000, 600, "above_max"), run(990), run(1005)]
    model = estimate(runs)
    assert model.censored_runs == 1
    assert model.runs == 5
    assert 2000.0 not in model.values_rps
    assert "left out" in format_noise(model)


def test_too_few_runs() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_RUNS}"):
        estimate([run(1000), run(1010), run(5, censored="below_start")])


def test_default_prior() -> None:
    d = default_noise()
    assert d.source == "default"
    assert d.sd_log > 0 and d.df > 0
    assert "default noise prior" in d.describe()


def test_required_runs_grows_with_noise() -> None:
    assert required_runs(0.01) < required_runs(0.03) < required_runs(0.08)
    assert required_runs(0.001) == 1


def test_save_and_load_round_trip(tmp_path) -> None:
    model = estimate([run(v) for v in (1000, 1020, 990, 1005)], scenario="exchange")
    path = save_noise(model, tmp_path, "exchange")
    assert path == tmp_path / "exchange" / "noise.json"
    assert path == noise_path(tmp_path, "exchange")
    again = load_noise(tmp_path, "exchange")
    assert again == model
    # nothing but the file (and the lock) is left behind: no temp files
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "noise.json"]
    data = json.loads(path.read_text())
    assert data["kind"] == "perfgate-noise" and data["schema"] == 1


def test_save_replaces_an_older_calibration(tmp_path) -> None:
    first = estimate([run(v) for v in (1000, 1020, 990)], scenario="s")
    second = estimate([run(v) for v in (500, 520, 490, 505)], scenario="s")
    save_noise(first, tmp_path, "s")
    save_noise(second, tmp_path, "s")
    assert load_noise(tmp_path, "s") == second


def test_missing_file_is_none(tmp_path) -> None:
    assert load_noise(tmp_path, "nothing") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"kind": "perfgate-baseline", "schema": 1}', "not a perfgate noise model"),
        ('{"kind": "perfgate-noise", "schema": 9}', "written by a newer perfgate (schema 9)"),
        ('{"kind": "perfgate-noise", "schema": 1}', "missing key 'sd_log'"),
        ('{"kind": "perfgate-noise", "schema": 1, "sd_log": NaN}', "NaN is not valid JSON"),
        ("[1]", "not a JSON object (found an array)"),
        ('{"kind": "perfgate-noise", "schema": 1, "sd_log": "x"}', "must be a number"),
        ('{"kind": "perfgate-noise", "schema": 1, "sd_log": -1, "df": 1}', "must be ≥ 0"),
    ],
)
def test_broken_file_is_a_baseline_error_and_left_alone(tmp_path, content, message) -> None:
    path = noise_path(tmp_path, "s")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(BaselineError, match=re.escape(message)) as info:
        load_noise(tmp_path, "s")
    assert str(info.value).startswith(f"noise model {path}: ")  # the store's one format
    assert path.read_text() == content


def test_unsafe_scenario_name(tmp_path) -> None:
    with pytest.raises(BaselineError, match=re.escape("scenario name '../escape' is not allowed")):
        noise_path(tmp_path, "../escape")
    assert noise_path(tmp_path, "feature/x").parent.name == "feature_x"


def test_write_failure_is_an_output_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = NoiseModel(sd_log=0.01, df=5, pair_sd_log=0.01, pair_df=3)
    with pytest.raises(OutputError):
        save_noise(model, blocker, "s")


def test_side_by_side_calibration_measures_the_deployment_difference() -> None:
    from perfgate.calibration import SideBySideRun, estimate_side_by_side

    def run(offset: float, goodput: float) -> SideBySideRun:
        sat = Saturation(users=100.0, throughput_rps=1000.0, broken=True, reason="", censored="no")
        return SideBySideRun(saturation=sat, log_ratios=(offset, offset), log_goodput=goodput)

    # two deployments differing by ±3 % from run to run: δ₁ − δ₂ has SD 3 % → deployment SD ≈ 2.1 %
    offsets = [0.03, -0.03, 0.03, -0.03, 0.03, -0.03, 0.03, -0.03]
    model = estimate_side_by_side([run(o, 6.9 + o / 2) for o in offsets], scenario="s")
    assert model.deploy_sd_log is not None
    point = 0.03 / math.sqrt(2)
    assert point < model.deploy_sd_log < 1.6 * point  # the 90 % upper bound, never below
    assert model.between_sd_log == pytest.approx(0.015, rel=0.1)
    assert "deployment difference SD" in model.describe()
    # sessions accumulate: a second calibration adds its runs to the first's
    again = estimate_side_by_side([run(0.0, 6.9)] * 3, scenario="s", previous=model)
    assert len(again.aa_log_ratios) == len(offsets) + 3


def test_the_gate_takes_its_priors_from_a_calibration() -> None:
    from perfgate.calibration import default_noise
    from perfgate.gate import DEFAULT_BETWEEN_SD, DEFAULT_DEPLOY_SD, priors

    assert priors(None).deploy_sd == DEFAULT_DEPLOY_SD
    assert priors(default_noise()).between_sd == DEFAULT_BETWEEN_SD
    measured = NoiseModel(sd_log=0.03, df=9, pair_sd_log=0.02, pair_df=6, deploy_sd_log=0.005)
    got = priors(measured)
    assert got.deploy_sd == 0.005 and got.between_sd == 0.03 and got.noise is measured
