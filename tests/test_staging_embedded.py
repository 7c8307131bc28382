"""Staging: the provider interface, the `embedded` reference exchange and the `none` provider."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import perfgate.staging as staging
import perfgate.staging.embedded as embedded
from perfgate.errors import InputError, ScenarioError, StagingError, TargetUnreachable
from perfgate.exchange import ExchangeConfig
from perfgate.models import GateSpec, RampSpec, Scenario, Slo, StagingSpec, UsersSpec
from perfgate.staging import StagedTarget, StagingOptions, provision


def _scenario(provider: str = "embedded", **embedded_options: Any) -> Scenario:
    options = {"seed_orders": 10, "service_ms": 1.0, **embedded_options}
    return Scenario(
        name="t",
        path="",
        content_hash="x",
        staging=StagingSpec(provider=provider, embedded=options),  # type: ignore[arg-type]
        users=UsersSpec(),
        ramp=RampSpec(),
        slo=Slo(),
        gate=GateSpec(),
    )


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pids of every child the embedded provider starts."""
    pids: list[int] = []
    real = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(embedded.subprocess, "Popen", recording)
    return pids


# -- embedded --------------------------------------------------------------------------------------


def test_embedded_serves_then_is_gone_after_exit(spawned: list[int]) -> None:
    lines: list[str] = []
    options = StagingOptions(run_id="abc", log=lines.append)
    with provision(_scenario(slots=3), options=options) as target:
        assert target.provider == "embedded"
        assert target.url.startswith("http://127.0.0.1:")
        assert target.description == f"reference exchange (pid {spawned[0]}) on {target.url}"
        assert target.details["exchange"]["slots"] == 3
        assert target.details["pid"] == spawned[0]
        health = httpx.get(f"{target.url}/health")
        assert health.status_code == 200
        assert health.json()["config"]["slots"] == 3
        assert not _gone(spawned[0])
    assert _gone(spawned[0])
    assert any("starting reference exchange" in line for line in lines)
    assert any("stopping reference exchange" in line for line in lines)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{target.url}/health", timeout=1)


def test_embedded_is_stopped_when_the_body_raises(spawned: list[int]) -> None:
    with pytest.raises(RuntimeError, match="boom"), provision(_scenario()) as target:
        assert httpx.get(f"{target.url}/health").status_code == 200
        raise RuntimeError("boom")
    assert _gone(spawned[0])


def test_embedded_is_stopped_on_keyboard_interrupt(spawned: list[int]) -> None:
    with pytest.raises(KeyboardInterrupt), provision(_scenario()):
        raise KeyboardInterrupt
    assert _gone(spawned[0])


@pytest.mark.parametrize(
    ("options", "key"),
    [({"slotz": 2}, "slotz"), ({"slots": 0}, "slots"), ({"cache": "no"}, "cache")],
)
def test_bad_embedded_option_fails_before_anything_starts(
    spawned: list[int], options: dict[str, Any], key: str
) -> None:
    scenario = _scenario(**options)
    with pytest.raises(ScenarioError, match=rf"staging\.embedded\.{key}: ") as info:
        _enter(provision(scenario))
    assert "\n" not in str(info.value)
    assert spawned == []
    named = Scenario(**{**_fields(scenario), "path": "scenarios/x.yaml"})
    with pytest.raises(ScenarioError, match=rf"^scenarios/x\.yaml: staging\.embedded\.{key}: "):
        embedded.exchange_config(named)


def _enter(manager: contextlib.AbstractContextManager[Any]) -> None:
    """Enter a context that is expected to raise before its body runs."""
    with manager:
        pytest.fail("the body must not run")


def _fields(scenario: Scenario) -> dict[str, Any]:
    return {name: getattr(scenario, name) for name in Scenario.__dataclass_fields__}


def test_child_that_cannot_listen_is_a_staging_error_with_its_last_line(
    spawned: list[int],
) -> None:
    # 192.0.2.1 (TEST-NET-1) is not an address of this machine: bind fails, nothing is sent.
    with (
        pytest.raises(StagingError, match=r"failed to start \(exit code 1\): error: cannot listen"),
        embedded.run_exchange(ExchangeConfig(seed_orders=0), host="192.0.2.1"),
    ):
        pytest.fail("must not get here")
    assert _gone(spawned[0])


def test_start_timeout_kills_the_child(spawned: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "START_TIMEOUT_S", 0.0)
    with pytest.raises(StagingError, match="did not start listening within 0 s"):
        _enter(embedded.run_exchange(ExchangeConfig(seed_orders=0)))
    assert _gone(spawned[0])


def test_stop_escalates_to_sigkill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "STOP_TIMEOUT_S", 0.5)
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline() == b"ready\n"
        lines: list[str] = []
        started = time.monotonic()
        with open(os.devnull, "rb") as err:
            embedded._stop(stubborn, lines.append, err)  # type: ignore[arg-type]
        assert time.monotonic() - started < 5
        assert stubborn.returncode == -signal.SIGKILL
        assert any("ignored SIGTERM" in line for line in lines)
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()
        if stubborn.stdout is not None:
            stubborn.stdout.close()


# -- none ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _http_server() -> Iterator[str]:
    """A plain HTTP server that answers 404 to everything (reachable, but no /health)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_none_yields_a_reachable_target_even_if_it_answers_404() -> None:
    with _http_server() as url, provision(_scenario("embedded"), target=url + "/") as target:
        assert target == StagedTarget(
            url=url, provider="none", description=f"existing target {url}"
        )


def test_none_unreachable_is_target_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "PROBE_TIMEOUT_S", 0.5)
    url = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(TargetUnreachable, match=rf"^target {url} did not answer within 0.5 s"):
        _enter(provision(_scenario("none"), target=url))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com", "must start with http:// or https://"),
        ("localhost:8080", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http://127.0.0.1:99999", "malformed"),
        ("http://127.0.0.1:8080/?q=1", "query"),
    ],
)
def test_none_bad_url_is_input_error_naming_it(url: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        _enter(provision(_scenario("none"), target=url))
    assert url in str(info.value)


def test_url_passwords_are_redacted() -> None:
    assert staging.redact_url("http://bob:s3cret@h:81/x") == "http://bob:***@h:81/x"
    with pytest.raises(InputError) as info:
        _enter(provision(_scenario("none"), target="ftp://bob:s3cret@h"))
    assert "s3cret" not in str(info.value)


def test_provider_choice_errors() -> None:
    with pytest.raises(InputError, match="needs a target URL"), provision(_scenario("none")):
        pass
    with pytest.raises(InputError, match="cannot be combined with --staging embedded"):
        _enter(provision(_scenario(), provider="embedded", target="http://127.0.0.1:1"))
    with pytest.raises(InputError, match="unknown staging provider 'docker'"):
        _enter(provision(_scenario(), provider="docker"))


# -- kubernetes (delegated lazily) -----------------------------------------------------------------


def test_kubernetes_unavailable_is_a_staging_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "perfgate.staging.kubernetes", None)
    with pytest.raises(StagingError, match="kubernetes staging is not available"):
        _enter(provision(_scenario("kubernetes")))


def test_kubernetes_is_delegated_to_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Scenario, StagingOptions]] = []
    torn_down: list[bool] = []

    @contextlib.contextmanager
    def provision_kubernetes(scenario: Scenario, options: StagingOptions) -> Iterator[StagedTarget]:
        calls.append((scenario, options))
        try:
            yield StagedTarget(
                url="http://svc", provider="kubernetes", description="k", namespace="ns"
            )
        finally:
            torn_down.append(True)

    fake = types.ModuleType("perfgate.staging.kubernetes")
    fake.provision_kubernetes = provision_kubernetes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "perfgate.staging.kubernetes", fake)
    scenario = _scenario()
    options = StagingOptions(release="r1")
    with provision(scenario, provider="kubernetes", options=options) as target:
        assert target.namespace == "ns"
        assert not torn_down
    assert calls == [(scenario, options)] and torn_down == [True]
