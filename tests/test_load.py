"""End-to-end tests of the load stage: LocustRunner + the engine child against a real server."""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from perfgate.errors import LoadError, ScenarioError
from perfgate.events import Event, StepDone, StepStarted, Tick
from perfgate.histogram import Histogram
from perfgate.load import protocol
from perfgate.load.runner import LocustRunner, step_stats_from_message
from perfgate.models import LoadSpec, RequestSpec, Slo, UsersSpec
from perfgate.steps import count_stalls, generator_health, slo_check

ROOT = Path(__file__).resolve().parent.parent
DELAY_S = 0.005
SECRET = "hunter2-s3cr3t"


# ---------------------------------------------------------------------------------------------
# A tiny target: fixed delay, /fail answers 500, /orders records bodies and hands out ids
# ---------------------------------------------------------------------------------------------


class Target:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bodies: list[Any] = []
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.next_id = 1000

    def reset(self) -> None:
        with self.lock:
            self.bodies.clear()
            self.paths.clear()
            self.auth.clear()


def _handler(target: Target) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # One write per response would do too; without this, Nagle + delayed ACK add 40 ms.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except ConnectionError:  # the client timed out and left (test_request_timeout_…)
                self.close_connection = True

        def do_GET(self) -> None:
            time.sleep(1.0 if self.path.startswith("/slow") else DELAY_S)
            with target.lock:
                target.paths.append(self.path)
                target.auth.append(self.headers.get("Authorization"))
            if self.path.startswith("/fail"):
                self._reply(500, {"error": "boom"})
            elif self.path.startswith("/orders/"):
                known = self.path.rsplit("/", 1)[1].isdigit()
                self._reply(200 if known else 404, {"ok": known})
            else:
                self._reply(200, {"ok": True})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            time.sleep(DELAY_S)
            with target.lock:
                target.bodies.append(body)
                target.next_id += 1
                oid = target.next_id
            self._reply(201, {"order": {"id": oid}})

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Target]]:
    target = Target()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(target))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", target
    finally:
        httpd.shutdown()
        httpd.server_close()


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in the group; zombies wait for init to reap."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def _assert_reaped(pid: int) -> None:
    assert not _group_alive(pid)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).ppid() != os.getpid()


SLO = Slo(p95_ms=200.0, error_rate=0.01)


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def test_steps_end_to_end(server: tuple[str, Target]) -> None:
    url, _ = server
    users = UsersSpec(
        requests=(
            RequestSpec(name="fast", path="/fast", weight=3),
            RequestSpec(name="fail", path="/fail", weight=1),
        )
    )
    events: list[Event] = []
    with LocustRunner(url, users, SLO, LoadSpec(request_timeout_s=5), on_event=events.append) as r:
        pid = r.pid
        assert pid is not None and _group_alive(pid)
        steps = [
            r.measure(n, settle_s=0.5, min_s=1.5, max_s=1.5, min_samples=0, phase="ramp")
            for n in (2, 4)
        ]
        r.hold(1, 1.0)
        timeline = r.timeline
    _assert_reaped(pid)

    for n, s in zip((2, 4), steps, strict=True):
        assert s.users == n
        assert s.duration_s == pytest.approx(1.5, abs=0.1)
        assert s.requests > 20
        assert s.throughput_rps == pytest.approx(s.requests / s.duration_s)
        # closed model: never faster than n users each waiting DELAY_S per request
        assert s.throughput_rps <= n / DELAY_S * 1.05
        assert s.p50_ms is not None and s.p95_ms is not None and s.p99_ms is not None
        assert s.p95_ms >= DELAY_S * 1000
        assert s.p50_ms <= s.p95_ms <= s.p99_ms <= (s.max_ms or 0)
        assert s.mean_ms is not None and s.mean_ms >= DELAY_S * 1000
        # a quarter of the mix fails with HTTP 500
        assert 0 < s.failures < s.requests
        assert s.error_rate == pytest.approx(0.25, abs=0.12)
        assert not s.slo_ok and s.slo_reason.startswith("error rate ")
        assert s.errors and s.errors[0][0] == "GET fail: HTTP 500"
        assert s.errors[0][1] == s.failures
        (kind,) = s.error_kinds  # the errors table's row: request × status, first seen
        assert (kind.method, kind.name, kind.kind, kind.count) == (
            "GET",
            "fail",
            "HTTP 500",
            s.failures,
        )
        assert 0 <= kind.first_s < s.duration_s
        # bodies: '{"ok": true}' (12 bytes) and '{"error": "boom"}' (17 bytes)
        assert s.bytes_received == 12 * (s.requests - s.failures) + 17 * s.failures
        assert len("GET /fail HTTP/1.1\r\n") * s.requests < s.bytes_sent < 1000 * s.requests
        assert s.p99_ms is not None and s.p999_ms is not None
        assert s.p99_ms <= s.p999_ms <= (s.max_ms or 0) * 1.01
        by_name = {e.name: e for e in s.endpoints}
        assert set(by_name) == {"fast", "fail"}
        assert by_name["fail"].failures == by_name["fail"].requests == s.failures
        assert by_name["fail"].p95_ms is None  # latency is for successes only
        assert by_name["fast"].failures == 0 and by_name["fast"].p95_ms is not None
        assert by_name["fast"].requests + by_name["fail"].requests == s.requests
        hist = Histogram.from_dict(s.histogram)
        assert hist.count == s.requests - s.failures
        assert s.generator is not None
        assert 0 <= s.generator.cpu_percent < 400
        assert s.generator.little_ratio is not None
        assert 0.5 < s.generator.little_ratio <= 1.1
        assert s.stalls >= 0
    assert steps[0].index == 0 and steps[1].index == 1
    assert 0 < steps[0].started_s < steps[1].started_s
    assert steps[1].throughput_rps > steps[0].throughput_rps

    kinds = [type(e) for e in events]
    assert kinds[0] is StepStarted and Tick in kinds and kinds[-1] is StepDone
    started = [e for e in events if isinstance(e, StepStarted)]
    assert [(e.step, e.phase, e.users, e.record) for e in started] == [
        (0, "ramp", 2, True),
        (1, "ramp", 4, True),
        (None, "hold", 1, False),
    ]
    assert started[0].slo_p95_ms == SLO.p95_ms and started[2].max_s == 1.0
    done = [e for e in events if isinstance(e, StepDone)]
    assert [d.stats for d in done] == [*steps, None]
    assert done[-1].phase == "hold"
    ticks = [e for e in events if isinstance(e, Tick)]
    assert ticks and all(t.t_s is not None and t.elapsed_s >= 0 for t in ticks)
    assert any(t.step == 1 and t.phase == "ramp" and t.throughput_rps > 0 for t in ticks)
    assert len(timeline) >= 4
    assert any(p.users == 4 and p.throughput_rps > 0 for p in timeline)


def test_min_samples_extends_a_step_until_max_s(server: tuple[str, Target]) -> None:
    url, _ = server
    users = UsersSpec(requests=(RequestSpec(name="fast", path="/fast"),))
    with LocustRunner(url, users, SLO) as r:
        short = r.measure(1, settle_s=0.2, min_s=0.5, max_s=3.0, min_samples=5, phase="search")
        capped = r.measure(1, settle_s=0.0, min_s=0.5, max_s=1.5, min_samples=10**9, phase="x")
    assert short.duration_s == pytest.approx(0.5, abs=0.15)
    assert short.requests >= 5
    assert short.phase == "search"
    assert capped.duration_s == pytest.approx(1.5, abs=0.15)


def test_templates_capture_and_headers_reach_the_server(server: tuple[str, Target]) -> None:
    url, target = server
    target.reset()
    users = UsersSpec(
        requests=(
            RequestSpec(
                name="place order",
                method="POST",
                path="/orders",
                json={
                    "price": "{{ rand_float(10, 20, 2) }}",
                    "qty": "{{ rand_int(1, 5) }}",
                    "side": "{{ choice('buy', 'sell') }}",
                    "user": "{{ user_index }}",
                    "note": "u{{ user_index }}-{{ seq }}",
                    "fixed": {"symbol": "BTC-USDT"},
                },
                capture={"oid": "order.id"},
                expect_status=(201,),
            ),
            RequestSpec(name="get order", path="/orders/{{ var.oid }}", weight=3),
            RequestSpec(name="wrong status", method="POST", path="/orders", expect_status=(200,)),
        ),
        headers={"Authorization": f"Bearer {SECRET}"},
        secret_values=(SECRET,),
    )
    with LocustRunner(url, users, SLO) as r:
        s = r.measure(3, settle_s=0.3, min_s=1.5, max_s=1.5, min_samples=0, phase="ramp")
    with target.lock:
        bodies = list(target.bodies)
        paths = list(target.paths)
        auth = set(target.auth)
    placed = [b for b in bodies if isinstance(b, dict)]
    assert len(placed) > 5
    for body in placed:
        assert isinstance(body["price"], float) and 10 <= body["price"] <= 20
        assert isinstance(body["qty"], int) and 1 <= body["qty"] <= 5
        assert body["side"] in ("buy", "sell")
        assert isinstance(body["user"], int) and 0 <= body["user"] < 3
        assert isinstance(body["note"], str) and body["note"].startswith(f"u{body['user']}-")
        assert body["fixed"] == {"symbol": "BTC-USDT"}
    assert len({b["user"] for b in placed}) == 3
    # Every order fetch used an id the server handed out, so none was a 404.
    order_paths = [p for p in paths if p.startswith("/orders/")]
    assert order_paths and all(int(p.rsplit("/", 1)[1]) > 1000 for p in order_paths)
    by_name = {e.name: e for e in s.endpoints}
    assert by_name["get order"].failures == 0 and by_name["get order"].requests > 0
    assert by_name["place order"].failures == 0
    assert by_name["wrong status"].failures == by_name["wrong status"].requests > 0
    assert ("POST wrong status: HTTP 201 (expected 200)", s.failures) in s.errors
    assert auth == {f"Bearer {SECRET}"}


LOCUSTFILE = """
    from locust import FastHttpUser, task

    print("a locustfile that prints to stdout must not break the protocol")

    class Shopper(FastHttpUser):
        @task(3)
        def browse(self):
            self.client.get("/fast", name="lf browse")

        @task
        def checkout(self):
            with self.client.get("/fail", name="lf checkout", catch_response=True) as resp:
                resp.failure("token hunter2-s3cr3t was rejected")
"""


def test_locustfile_scenario(server: tuple[str, Target], tmp_path: Path) -> None:
    url, _ = server
    path = tmp_path / "shop.py"
    path.write_text(textwrap.dedent(LOCUSTFILE))
    users = UsersSpec(locustfile=str(path), secret_values=(SECRET,))
    with LocustRunner(url, users, SLO) as r:
        assert r.ready["user_classes"] == ["Shopper"]
        s = r.measure(2, settle_s=0.3, min_s=1.2, max_s=1.2, min_samples=0, phase="ramp")
    names = {e.name for e in s.endpoints}
    assert names == {"lf browse", "lf checkout"}
    assert s.failures > 0 and s.requests > s.failures
    assert s.errors[0][0] == "GET lf checkout: CatchResponseError: token *** was rejected"
    assert SECRET not in repr(s)
    assert s.generator is not None and s.generator.little_ratio is not None


def test_broken_locustfile_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("from locust import HttpUser\n\nRATIO = 1 / 0\n")
    runner = LocustRunner("http://127.0.0.1:9", UsersSpec(locustfile=str(path)), SLO)
    with pytest.raises(ScenarioError) as info:
        runner.start()
    message = str(info.value)
    assert str(path) in message
    assert "ZeroDivisionError: division by zero" in message
    assert "\n" not in message
    assert runner.pid is not None
    _assert_reaped(runner.pid)


def test_locustfile_without_user_classes(tmp_path: Path) -> None:
    path = tmp_path / "empty.py"
    path.write_text("from locust import HttpUser  # only the abstract base\n")
    runner = LocustRunner("http://127.0.0.1:9", UsersSpec(locustfile=str(path)), SLO)
    with pytest.raises(ScenarioError, match="defines no User class"), runner:
        pass


def test_bad_template_reaching_the_engine_is_a_scenario_error() -> None:
    users = UsersSpec(requests=(RequestSpec(name="x", path="/{{ nope(1) }}"),))
    with (
        pytest.raises(
            ScenarioError, match=r"unknown template function 'nope' in users.requests\[0\].path"
        ),
        LocustRunner("http://127.0.0.1:9", users, SLO),
    ):
        pass


def test_unreachable_target_counts_failures_instead_of_hanging() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused
    users = UsersSpec(requests=(RequestSpec(name="health", path="/health"),))
    started = time.monotonic()
    with LocustRunner(f"http://127.0.0.1:{port}", users, SLO, LoadSpec(request_timeout_s=2)) as r:
        s = r.measure(2, settle_s=0.2, min_s=1.0, max_s=1.0, min_samples=0, phase="ramp")
    assert time.monotonic() - started < 15
    assert s.requests > 0 and s.failures == s.requests
    assert s.error_rate == 1.0
    assert not s.slo_ok
    assert "no successful requests" in s.slo_reason
    assert s.p95_ms is None and s.p95_ci_ms is None
    assert "Connection refused" in s.errors[0][0] or "ConnectionRefused" in s.errors[0][0]


def test_two_workers_on_locusts_master_worker_runners(server: tuple[str, Target]) -> None:
    url, target = server
    target.reset()
    users = UsersSpec(
        requests=(
            RequestSpec(
                name="place",
                method="POST",
                path="/orders",
                json={"user": "{{ user_index }}"},
                weight=1,
            ),
            RequestSpec(name="fast", path="/fast", weight=2),
            RequestSpec(name="fail", path="/fail", weight=1),
        )
    )
    with LocustRunner(url, users, SLO, LoadSpec(workers=2)) as r:
        assert r.ready["workers"] == 2 and len(r.ready["worker_pids"]) == 2
        pids = [r.pid, *r.ready["worker_pids"]]
        assert all(psutil.pid_exists(p) for p in pids)
        big = r.measure(4, settle_s=0.5, min_s=1.5, max_s=1.5, min_samples=0, phase="ramp")
        small = r.measure(2, settle_s=0.5, min_s=1.0, max_s=1.0, min_samples=0, phase="ramp")
    assert r.pid is not None
    _assert_reaped(r.pid)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
    for s, n in ((big, 4), (small, 2)):
        assert s.users == n and s.requests > 20
        assert s.throughput_rps <= n / DELAY_S * 1.05
        assert s.p95_ms is not None and s.p95_ms >= DELAY_S * 1000
        assert {e.name for e in s.endpoints} == {"place", "fast", "fail"}
        by_name = {e.name: e for e in s.endpoints}
        assert by_name["fail"].failures == by_name["fail"].requests == s.failures > 0
        assert Histogram.from_dict(s.histogram).count == s.requests - s.failures
        assert s.errors[0] == ("GET fail: HTTP 500", s.failures)
        assert s.generator is not None and s.generator.little_ratio is not None
        assert 0.5 < s.generator.little_ratio <= 1.1
    with target.lock:
        indexes = {b["user"] for b in target.bodies}
    # user_index is unique across the two workers (local index × 2 + worker index)
    assert indexes == {0, 1, 2, 3}


def test_a_dying_worker_is_a_load_error(server: tuple[str, Target]) -> None:
    url, _ = server
    users = UsersSpec(requests=(RequestSpec(name="fast", path="/fast"),))
    holder: dict[str, int] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, Tick) and "killed" not in holder:
            holder["killed"] = 1
            os.kill(holder["worker"], signal.SIGKILL)

    with LocustRunner(url, users, SLO, LoadSpec(workers=2), on_event=on_event) as r:
        holder["worker"] = r.ready["worker_pids"][1]
        with pytest.raises(LoadError, match=r"load worker 2 of 2 exited on SIGKILL"):
            r.measure(2, settle_s=0.2, min_s=5.0, max_s=5.0, min_samples=0, phase="ramp")
    assert r.pid is not None
    _assert_reaped(r.pid)


def test_request_timeout_is_a_counted_failure(server: tuple[str, Target]) -> None:
    url, _ = server
    users = UsersSpec(requests=(RequestSpec(name="slow", path="/slow"),))
    with LocustRunner(url, users, SLO, LoadSpec(request_timeout_s=0.2)) as r:
        s = r.measure(2, settle_s=0.0, min_s=1.0, max_s=1.0, min_samples=0, phase="ramp")
    assert s.failures == s.requests >= 4  # 2 users × 1 s / 0.2 s, give or take the edges
    message = s.errors[0][0]
    assert message.startswith("GET slow: ") and "timed out" in message
    assert "127.0.0.1" not in message  # no URL (they carry ids, sometimes tokens)


# ---------------------------------------------------------------------------------------------
# Faults: interrupts, a dying engine, garbage, silence
# ---------------------------------------------------------------------------------------------


def test_keyboard_interrupt_from_on_event_reaps_the_engine(server: tuple[str, Target]) -> None:
    url, _ = server
    users = UsersSpec(requests=(RequestSpec(name="fast", path="/fast"),))

    def on_event(event: Event) -> None:
        if isinstance(event, Tick):
            raise KeyboardInterrupt

    runner = LocustRunner(url, users, SLO, on_event=on_event)
    with pytest.raises(KeyboardInterrupt), runner:
        runner.measure(2, settle_s=0.2, min_s=5.0, max_s=5.0, min_samples=0, phase="ramp")
    assert runner.pid is not None
    _assert_reaped(runner.pid)


def test_engine_dying_mid_step_is_a_load_error(server: tuple[str, Target]) -> None:
    url, _ = server
    users = UsersSpec(requests=(RequestSpec(name="fast", path="/fast"),))
    holder: dict[str, int] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, Tick) and "killed" not in holder:
            holder["killed"] = 1
            os.kill(holder["pid"], signal.SIGKILL)

    with LocustRunner(url, users, SLO, on_event=on_event) as r:
        assert r.pid is not None
        holder["pid"] = r.pid
        with pytest.raises(LoadError, match="exited on SIGKILL"):
            r.measure(2, settle_s=0.2, min_s=5.0, max_s=5.0, min_samples=0, phase="ramp")
    _assert_reaped(holder["pid"])


def test_engine_exits_when_its_parent_is_killed(server: tuple[str, Target]) -> None:
    # The engine lives in its own session, so only its stdin tells it the parent is gone.
    url, _ = server
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from perfgate.load.runner import LocustRunner
                from perfgate.models import RequestSpec, Slo, UsersSpec
                users = UsersSpec(requests=(RequestSpec(name="fast", path="/fast"),))
                r = LocustRunner({url!r}, users, Slo()).__enter__()
                r.hold(2, 0.3)
                print(r.pid, flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert parent.stdout is not None
        engine_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(engine_pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    deadline = time.monotonic() + 10
    while _group_alive(engine_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(engine_pid)


def _fake_engine(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_garbage_from_the_engine_is_a_load_error() -> None:
    cmd = _fake_engine(
        """
        import sys, time
        sys.stderr.write("about to misbehave\\n"); sys.stderr.flush()
        print("this is not json", flush=True)
        time.sleep(30)
        """
    )
    runner = LocustRunner("http://127.0.0.1:9", UsersSpec(), SLO, engine_command=cmd)
    with pytest.raises(LoadError, match="unreadable line"):
        runner.start()
    assert runner.pid is not None
    _assert_reaped(runner.pid)


def test_silent_engine_times_out_and_the_whole_group_is_killed() -> None:
    # Answers ready, then ignores everything including SIGTERM, with a grandchild in its group.
    cmd = _fake_engine(
        """
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        sys.stdin.readline()
        print(json.dumps({"type": "ready", "version": 1, "grandchild": child.pid}), flush=True)
        sys.stderr.write("engine is stuck\\n"); sys.stderr.flush()
        time.sleep(60)
        """
    )
    runner = LocustRunner(
        "http://127.0.0.1:9", UsersSpec(), SLO, engine_command=cmd, answer_margin_s=0.5
    )
    started = time.monotonic()
    stuck = r"did not finish a 3-user step.*engine is stuck"
    with pytest.raises(LoadError, match=stuck), runner:
        grandchild = runner.ready["grandchild"]
        runner.measure(3, settle_s=0.1, min_s=0.3, max_s=0.3, min_samples=0, phase="ramp")
    assert time.monotonic() - started < 15
    assert runner.pid is not None
    _assert_reaped(runner.pid)
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"


# ---------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------


def test_slo_check_words() -> None:
    slo = Slo(p95_ms=250.0, error_rate=0.01)
    assert slo_check(120.0, 0.0, 10, slo) == (True, "")
    assert slo_check(312.4, 0.0, 10, slo) == (False, "p95 312 ms > SLO 250 ms")
    assert slo_check(100.0, 0.032, 10, slo) == (False, "error rate 3.2% > 1%")
    ok, why = slo_check(None, 1.0, 0, slo)
    assert not ok and why == "no successful requests; error rate 100% > 1%"
    assert slo_check(None, 0.0, 0, slo) == (False, "no successful requests")
    assert slo_check(250.0, 0.01, 5, slo) == (True, "")  # at the SLO still holds


def test_stalls() -> None:
    assert count_stalls([100, 98, 30, 101, 99]) == 1
    assert count_stalls([100, 0, 0, 100]) == 2
    assert count_stalls([5]) == 0
    assert count_stalls([0, 0, 0]) == 0


def test_generator_health_rules() -> None:
    healthy = generator_health(
        cpu_percent=40,
        loop_lag_ms=0.3,
        throughput_rps=400,
        mean_latency_ms=100,
        users=40,
        wait_s=0.0,
        judge_little=True,
    )
    assert healthy.little_ratio == pytest.approx(1.0)
    assert not healthy.limited and healthy.reason == ""
    hot = generator_health(
        cpu_percent=97,
        loop_lag_ms=5,
        throughput_rps=400,
        mean_latency_ms=100,
        users=40,
        wait_s=0.0,
        judge_little=True,
    )
    assert hot.limited and "generator CPU 97% of one core > 85%" in hot.reason
    queued = generator_health(
        cpu_percent=50,
        loop_lag_ms=5,
        throughput_rps=400,
        mean_latency_ms=50,
        users=40,
        wait_s=0.0,
        judge_little=True,
    )
    assert queued.little_ratio == pytest.approx(0.5)
    assert queued.limited and "0.50 of the 40 users" in queued.reason
    # think time counts as time the user is busy; locustfile users are not judged by Little
    thinking = generator_health(
        cpu_percent=10,
        loop_lag_ms=0.1,
        throughput_rps=20,
        mean_latency_ms=50,
        users=40,
        wait_s=1.95,
        judge_little=True,
    )
    assert thinking.little_ratio == pytest.approx(1.0) and not thinking.limited
    custom = generator_health(
        cpu_percent=10,
        loop_lag_ms=0.1,
        throughput_rps=20,
        mean_latency_ms=50,
        users=40,
        wait_s=0.0,
        judge_little=False,
    )
    assert custom.little_ratio == pytest.approx(0.025) and not custom.limited


def test_step_stats_from_message() -> None:
    ok, bad = Histogram(), Histogram()
    ok.record_many([10.0] * 90 + [300.0] * 10)
    msg = {
        "type": "step_done",
        "record": True,
        "users": 10,
        "duration_s": 2.0,
        "requests": 105,
        "failures": 5,
        "latency_sum_ms": 4000.0 + 5 * 1.0,
        "histogram": Histogram.merged([ok, bad]).to_dict(),
        "endpoints": [
            {
                "name": "a",
                "method": "GET",
                "requests": 105,
                "failures": 5,
                "histogram": ok.to_dict(),
            }
        ],
        "errors": [["GET a: HTTP 503", 5]],
        "per_second": [50, 55],
        "t_window": 3.25,
        "cpu_percent": 12.0,
        "loop_lag_p95_ms": 0.5,
    }
    s = step_stats_from_message(
        msg,
        slo=Slo(p95_ms=250, error_rate=0.01),
        users_spec=UsersSpec(),
        index=4,
        phase="ramp",
        cpu_percent=33.0,
    )
    assert s.throughput_rps == pytest.approx(52.5)
    assert s.error_rate == pytest.approx(5 / 105)
    assert s.p95_ms == pytest.approx(300.0, rel=0.005)
    assert s.slo_reason == "p95 300 ms > SLO 250 ms; error rate 4.8% > 1%"
    assert s.index == 4 and s.started_s == 3.25
    assert s.errors == (("GET a: HTTP 503", 5),)
    assert s.generator is not None and s.generator.cpu_percent == 33.0
    assert s.generator.little_ratio == pytest.approx(52.5 * (4005 / 105 / 1000) / 10, rel=1e-3)
    with pytest.raises(LoadError, match="malformed"):
        step_stats_from_message(
            {"type": "step_done"}, slo=SLO, users_spec=UsersSpec(), index=0, phase="ramp"
        )


def test_error_kinds_of_several_generators_merge() -> None:
    a = {"error_kinds": [["GET", "x", "HTTP 500", 3, 1.5], ["GET", "y", "HTTP 404", 1, 0.2]]}
    b = {"error_kinds": [["GET", "x", "HTTP 500", 2, 0.7]]}
    assert protocol.merge_error_kinds([a, b], top=10) == [
        ["GET", "x", "HTTP 500", 5, 0.7],
        ["GET", "y", "HTTP 404", 1, 0.2],
    ]


def test_protocol_lines() -> None:
    cmd = protocol.step_command(users=5, settle_s=1, min_s=2, max_s=3, min_samples=10, record=True)
    line = protocol.encode(cmd)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert protocol.decode(line, kinds=protocol.COMMANDS) == cmd
    assert protocol.decode(b'{"type": "tick", "t": 1}\n')["t"] == 1
    for bad in ("nope", "[1]", '{"type": "party"}', b"\xff\xfe"):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode(bad)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode('{"type": "tick"}', kinds=protocol.COMMANDS)
    with pytest.raises(ValueError, match="exceeds max_s"):
        protocol.step_command(users=1, settle_s=0, min_s=5, max_s=1, min_samples=0, record=True)
    with pytest.raises(ValueError):
        protocol.encode({"x": float("nan")})


def test_merge_step_results_is_exact() -> None:
    a_ok, b_ok = Histogram(), Histogram()
    a_ok.record_many([1.0 + i / 100 for i in range(500)])
    b_ok.record_many([50.0 + i for i in range(100)])
    common = {"type": "step_done", "record": True, "users": 20, "t_window": 1.0}
    a = {
        **common,
        "duration_s": 5.0,
        "requests": 510,
        "failures": 10,
        "latency_sum_ms": 900.0,
        "histogram": a_ok.to_dict(),
        "endpoints": [
            {
                "name": "x",
                "method": "GET",
                "requests": 510,
                "failures": 10,
                "histogram": a_ok.to_dict(),
            }
        ],
        "errors": [["GET x: HTTP 500", 10]],
        "per_second": [100, 102, 98, 110, 100],
        "cpu_percent": 40.0,
        "loop_lag_p95_ms": 0.5,
        "user_errors": 0,
    }
    b = {
        **common,
        "duration_s": 5.1,
        "requests": 100,
        "failures": 0,
        "latency_sum_ms": 9950.0,
        "histogram": b_ok.to_dict(),
        "endpoints": [
            {
                "name": "x",
                "method": "GET",
                "requests": 60,
                "failures": 0,
                "histogram": b_ok.to_dict(),
            },
            {
                "name": "y",
                "method": "POST",
                "requests": 40,
                "failures": 0,
                "histogram": Histogram().to_dict(),
            },
        ],
        "errors": [],
        "per_second": [20, 20, 20, 20],
        "cpu_percent": 70.0,
        "loop_lag_p95_ms": 2.0,
        "user_errors": 1,
    }
    m = protocol.merge_step_results([a, b])
    everything = Histogram.merged([a_ok, b_ok])
    merged_hist = Histogram.from_dict(m["histogram"])
    assert merged_hist.count == 600
    for p in (50, 95, 99):
        assert merged_hist.percentile(p) == pytest.approx(everything.percentile(p))
    assert (m["requests"], m["failures"], m["user_errors"]) == (610, 10, 1)
    assert m["duration_s"] == 5.1
    assert m["per_second"] == [120, 122, 118, 130]
    assert m["cpu_percent"] == 70.0 and m["cpu_percent_each"] == [40.0, 70.0]
    assert m["loop_lag_p95_ms"] == 2.0
    eps = {(e["method"], e["name"]): e for e in m["endpoints"]}
    assert eps[("GET", "x")]["requests"] == 570
    assert Histogram.from_dict(eps[("GET", "x")]["histogram"]).count == 600
    assert m["errors"] == [["GET x: HTTP 500", 10]]
    stats = step_stats_from_message(m, slo=SLO, users_spec=UsersSpec(), index=0, phase="ramp")
    assert stats.requests == 610 and stats.p95_ms == pytest.approx(everything.percentile(95))


# ---------------------------------------------------------------------------------------------
# Import hygiene: locust (gevent) must stay out of the CLI process
# ---------------------------------------------------------------------------------------------


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def test_parent_side_modules_do_not_import_locust_or_gevent() -> None:
    proc = _run_python(
        """
        import sys
        import perfgate.load, perfgate.load.runner, perfgate.search
        import perfgate.load.protocol, perfgate.histogram, perfgate.load.templates
        import perfgate.cli, perfgate.pipeline  # the CLI process as a whole
        assert perfgate.load.LocustRunner is perfgate.load.runner.LocustRunner
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("locust", "gevent", "greenlet"))
        print(bad)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_what_runs_before_the_engine_imports_locust_is_stdlib_only() -> None:
    # `python -m perfgate.load.engine` imports perfgate and perfgate.load first, and the engine
    # imports models/protocol/histogram/templates: none may pull in third-party modules
    # (urllib3/requests/kubernetes before locust crash with RecursionError).
    proc = _run_python(
        """
        import sys
        before = set(sys.modules)
        import perfgate, perfgate.load, perfgate.models
        import perfgate.load.protocol, perfgate.histogram, perfgate.load.templates
        new = set(sys.modules) - before
        foreign = sorted(m for m in new
                         if m.split(".")[0] not in sys.stdlib_module_names
                         and m.split(".")[0] != "perfgate")
        print(foreign)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


ENGINE_MODULES = (
    "perfgate.load.engine",
    "perfgate.load.engine_session",
    "perfgate.load.engine_steps",
    "perfgate.load.engine_runners",
    "perfgate.load.engine_record",
    "perfgate.load.engine_users",
    "perfgate.load.engine_process",
    "perfgate.load.engine_stream",
)


def test_engine_modules_import_locust_first_and_only_light_perfgate_modules() -> None:
    engine_files = {m: ROOT / (m.replace(".", "/") + ".py") for m in ENGINE_MODULES}
    on_disk = {f"perfgate.load.{p.stem}" for p in (ROOT / "perfgate/load").glob("engine*.py")}
    assert on_disk == set(ENGINE_MODULES), "a new engine module must be listed here"
    allowed = {
        "perfgate.load",
        "perfgate.load.protocol",
        "perfgate.histogram",
        "perfgate.load.templates",
        "perfgate.load.stream_probe",  # stream_url; websocket-client only inside probe_stream
        "perfgate.models",
        "perfgate.redaction",  # standard library only
        *ENGINE_MODULES,
    }
    for module, path in engine_files.items():
        tree = ast.parse(path.read_text())
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
            n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        }
        if module == "perfgate.load.engine" or {"locust", "gevent"} & {
            name.split(".")[0] for name in names
        }:
            first = imports[0]
            assert isinstance(first, ast.Import), module
            assert [a.name for a in first.names] == ["locust"], module
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("perfgate"):
                assert node.module is not None
                used.add(node.module)
                if node.module == "perfgate.load":
                    assert [a.name for a in node.names] == ["protocol"], module
            elif isinstance(node, ast.Import):
                used.update(a.name for a in node.names if a.name.startswith("perfgate"))
        assert used <= allowed, (module, used - allowed)
        if module == "perfgate.load.engine":
            assert "perfgate.load.engine_session" in used
