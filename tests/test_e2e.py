"""End to end through the real CLI: embedded exchange, real Locust load, real files.

The reference exchange's queueing knobs give the ground truth: with N closed-model users and no
think time, p95 ≈ N·service_ms/slots past the knee, so a p95 SLO of L ms breaks at
N* ≈ L·slots/service_ms users.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """\
name: e2e
staging:
  provider: embedded
  embedded: {{slots: {slots}, service_ms: {service_ms}, cache: true}}
users:
  requests:
    - {{name: balances, path: "/balances/u{{{{ user_index }}}}", weight: 3}}
    - {{name: book, path: /orderbook/BTC-USDT, weight: 1}}
ramp:
  start_users: 8
  step_users: 8
  max_users: 96
  step_seconds: 2
  settle_seconds: 0.5
  min_samples: 0
slo: {{p95_ms: {slo}}}
gate: {{min_users: {floor}, max_regression: 0.10, budget_minutes: 1.0}}
"""


def scenario(
    tmp_path: Path, name: str, *, slots: int, service_ms: float, slo: float, floor: int
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SCENARIO.format(slots=slots, service_ms=service_ms, slo=slo, floor=floor))
    return path


def perfgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PERFGATE_RELEASE": "from-env"}
    return subprocess.run(
        [sys.executable, "-m", "perfgate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
def test_gate_passes_then_blocks_a_slower_release(tmp_path: Path) -> None:
    # release 1: 4 slots × 10 ms → 400 req/s; p95 SLO 100 ms → N* ≈ 40 users
    good = scenario(tmp_path, "good", slots=4, service_ms=10, slo=100, floor=16)
    run1 = perfgate(
        "run",
        "--scenario",
        str(good),
        "--release",
        "r1",
        "--promote",
        "--json",
        "--baseline-dir",
        "b",
        "--report-dir",
        "r",
        cwd=tmp_path,
    )
    assert run1.returncode == 0, run1.stderr
    result = json.loads(run1.stdout)
    for key in (
        "schema",
        "scenario",
        "release",
        "verdict",
        "reasons",
        "saturation",
        "baseline",
        "steps",
        "generator",
        "started_at",
        "finished_at",
        "perfgate_version",
    ):
        assert key in result
    assert result["verdict"] == "pass" and result["release"] == "r1"
    users = result["saturation"]["users"]
    assert 40 * 0.85 <= users <= 40 * 1.15, f"saturation {users} users, analytical N* = 40"
    assert 400 * 0.85 <= result["saturation"]["throughput_rps"] <= 400 * 1.05
    assert result["saturation"]["broken"] is True
    step = result["steps"][0]
    for key in (
        "users",
        "duration_s",
        "requests",
        "failures",
        "throughput_rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "error_rate",
        "slo_ok",
    ):
        assert key in step
    # the linear ramp stops once a second failing level confirmed the break
    assert [s["slo_ok"] for s in result["steps"]][-2:] == [False, False]
    assert result["steps"][-1]["users"] < 96
    run_dir = Path(tmp_path / "r" / "e2e")
    folders = list(run_dir.iterdir())
    assert len(folders) == 1
    for name in ("result.json", "index.html", "junit.xml", "summary.md", "steps.csv"):
        assert (folders[0] / name).stat().st_size > 0
    assert str(folders[0].relative_to(tmp_path)) in run1.stderr, "the report's path is printed"
    assert (tmp_path / "b" / "e2e" / "r1.json").is_file(), "--promote stored the baseline"

    # release 2: 20 % less capacity (12.5 ms per request): r1 is staged again next to it, from
    # the exchange knobs its baseline recorded, and the two are measured side by side: blocked
    slow = scenario(tmp_path, "slow", slots=4, service_ms=12.5, slo=100, floor=16)
    run2 = perfgate(
        "run",
        "--scenario",
        str(slow),
        "--release",
        "r2",
        "--promote",
        "--baseline-dir",
        "b",
        "--report-dir",
        "r",
        cwd=tmp_path,
    )
    assert run2.returncode == 1, run2.stderr
    assert "BLOCK" in run2.stderr
    assert "r1" in run2.stderr, "the verdict names the baseline it compared with"
    assert not (tmp_path / "b" / "e2e" / "r2.json").exists(), "a blocked run is never promoted"
    latest = sorted(run_dir.glob("r2-*"))[-1]
    result2 = json.loads((latest / "result.json").read_text())
    assert result2["verdict"] == "block"
    assert result2["baseline"]["release"] == "r1"
    assert result2["baseline"]["mode"] == "side-by-side"
    assert result2["saturation"]["throughput_rps"] < 0.88 * result["saturation"]["throughput_rps"]
    assert {w["build"] for w in result2["windows"]} == {"candidate", "baseline"}
    assert 0.74 <= result2["diagnostics"]["gate_ratio"] <= 0.86, "capacity ratio 10/12.5 = 0.8"
    stored = json.loads((tmp_path / "b" / "e2e" / "r1.json").read_text())
    assert stored["recipe"]["exchange"]["service_ms"] == 10

    # release 3: the same knobs as r1: side by side again, and a pass
    run3 = perfgate(
        "run", "--scenario", str(good), "--release", "r3", "--json", "--baseline-dir", "b",
        "--report-dir", "r", cwd=tmp_path,
    )  # fmt: skip
    assert run3.returncode == 0, run3.stderr
    result3 = json.loads(run3.stdout)
    assert result3["baseline"]["mode"] == "side-by-side" and result3["verdict"] == "pass"


@pytest.mark.slow
def test_floor_blocks_without_baseline_and_release_comes_from_env(tmp_path: Path) -> None:
    # N* ≈ 40 users but the business needs 64: blocked by the floor alone
    scen = scenario(tmp_path, "floor", slots=4, service_ms=10, slo=100, floor=64)
    run = perfgate(
        "run",
        "--scenario",
        str(scen),
        "--json",
        "--baseline-dir",
        "b",
        "--report-dir",
        "r",
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["verdict"] == "block"
    assert result["release"] == "from-env"
    assert result["baseline"] is None
    assert any("floor" in r for r in result["reasons"])


@pytest.mark.slow
def test_manual_ramp_has_no_gate(tmp_path: Path) -> None:
    scen = scenario(tmp_path, "ramp", slots=4, service_ms=10, slo=100, floor=64)
    run = perfgate(
        "ramp",
        "--scenario",
        str(scen),
        "--max-users",
        "24",
        "--json",
        "--report-dir",
        "r",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr  # the floor would block a gate; a ramp never gates
    result = json.loads(run.stdout)
    assert result["mode"] == "ramp"
    assert [s["users"] for s in result["steps"]] == [8, 16, 24]
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_ramp_ui_serves_locusts_web_ui_on_loopback(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scen = scenario(tmp_path, "ui", slots=4, service_ms=5, slo=100, floor=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfgate", "ramp", "--ui", "--ui-port", str(port), "-s", str(scen)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                time.sleep(0.3)
        swarm = httpx.post(f"{url}/swarm", data={"user_count": 4, "spawn_rate": 4}, timeout=5)
        assert swarm.json()["success"] is True
        time.sleep(3)
        stats = httpx.get(f"{url}/stats/requests", timeout=5).json()
        assert stats["user_count"] == 4
        names = {s["name"] for s in stats["stats"]}
        assert {"balances", "book"} <= names, "the scenario's requests run under the web UI"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"Locust web UI on http://127.0.0.1:{port}" in err


@pytest.mark.slow
def test_fixed_urls_block_a_slower_candidate_measured_side_by_side(tmp_path: Path) -> None:
    """Two deployments the user stood up (--target, --baseline-target): the default windows."""
    import socket
    import time

    import httpx

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    servers = []
    urls = []
    for service_ms in (10, 13):  # previous release, then a candidate 30 % slower per request
        port = free_port()
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "perfgate", "exchange", "serve", "--port", str(port),
                 "--slots", "4", "--service-ms", str(service_ms)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/health", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        scen = tmp_path / "paired.yaml"
        scen.write_text(
            "name: paired\nstaging: {provider: none}\n"
            'users: {requests: [{name: bal, path: "/balances/u{{ user_index }}"}]}\n'
            "ramp: {strategy: adaptive, start_users: 8, max_users: 200, step_seconds: 2,"
            " settle_seconds: 0.5, min_samples: 0}\n"
            "slo: {p95_ms: 100}\ngate: {max_regression: 0.1}\n"
        )
        run = perfgate(
            "run", "-s", str(scen), "--target", urls[1], "--baseline-target", urls[0],
            "--seed", "3", "--json", "--report-dir", "r", "--baseline-dir", "b",
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["verdict"] == "block"
    assert result["baseline"]["mode"] == "side-by-side"
    assert result["baseline"]["saturation"]["reason"].startswith("measured now, side by side")
    ratio = result["diagnostics"]["gate_ratio"]
    assert 0.70 <= ratio <= 0.84, f"capacity ratio 10/13 = 0.77, measured {ratio:.3f}"
    assert {w["build"] for w in result["windows"]} == {"candidate", "baseline"}
    assert any("deployment difference" in reason for reason in result["reasons"]), (
        "without a cross-over the verdict says it assumed a deployment difference"
    )
