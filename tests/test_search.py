"""Tests for perfgate.search.linear against a tiny formula-driven StepRunner."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from perfgate.models import RampSpec, Slo, StepStats
from perfgate.search import STRATEGIES, SearchOutcome, StepRunner, linear, linear_levels

SLO = Slo(p95_ms=100.0, error_rate=0.01)


class FakeRunner:
    """p95 = formula(users); every call is logged so the test can check what was asked."""

    def __init__(self, p95: Callable[[int], float]) -> None:
        self.p95 = p95
        self.calls: list[dict[str, object]] = []
        self.clock = 0.0

    def measure(
        self,
        users: int,
        *,
        settle_s: float,
        min_s: float,
        max_s: float,
        min_samples: int,
        phase: str,
    ) -> StepStats:
        self.calls.append(
            {
                "users": users,
                "settle_s": settle_s,
                "min_s": min_s,
                "max_s": max_s,
                "min_samples": min_samples,
                "phase": phase,
            }
        )
        self.clock += settle_s
        started = self.clock
        self.clock += max_s
        p95 = self.p95(users)
        ok = p95 <= SLO.p95_ms
        return StepStats(
            users=users,
            duration_s=max_s,
            requests=1000,
            failures=0,
            throughput_rps=users * 10.0,
            p50_ms=p95 / 2,
            p95_ms=p95,
            p99_ms=p95 * 1.2,
            error_rate=0.0,
            slo_ok=ok,
            index=99,  # the search must overwrite this
            started_s=started,
            slo_reason="" if ok else f"p95 {p95:.0f} ms > SLO {SLO.p95_ms:g} ms",
        )

    def hold(self, users: int, seconds: float) -> None:
        self.calls.append({"hold": users, "seconds": seconds})


def ramp(**kw: object) -> RampSpec:
    base: dict[str, object] = {
        "start_users": 10,
        "step_users": 10,
        "max_users": 100,
        "step_seconds": 8.0,
        "settle_seconds": 2.0,
    }
    base.update(kw)
    return RampSpec(**base)  # type: ignore[arg-type]


def test_fake_runner_satisfies_the_protocol() -> None:
    runner: StepRunner = FakeRunner(lambda n: 1.0)
    assert runner.measure(1, settle_s=0, min_s=1, max_s=1, min_samples=0, phase="ramp").users == 1


def test_levels() -> None:
    assert linear_levels(ramp()) == (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
    assert linear_levels(ramp(start_users=5, step_users=20, max_users=50)) == (5, 25, 45)
    assert linear_levels(ramp(start_users=7, max_users=7)) == (7,)
    with pytest.raises(ValueError, match="max_users 5 is below"):
        linear_levels(ramp(max_users=5))
    with pytest.raises(ValueError, match="step_users"):
        linear_levels(ramp(step_users=0))


def test_stops_after_two_consecutive_failing_steps() -> None:
    runner = FakeRunner(lambda n: 2.0 * n)  # breaks above 50 users
    seen: list[StepStats] = []
    out = linear(runner, ramp(), SLO, on_step=seen.append)
    assert isinstance(out, SearchOutcome)
    assert [s.users for s in out.steps] == [10, 20, 30, 40, 50, 60, 70]
    assert [s.slo_ok for s in out.steps] == [True] * 5 + [False, False]
    assert "broke at 60 users" in out.stopped_because
    assert "stayed broken at 70 users" in out.stopped_because
    assert "p95 120 ms > SLO 100 ms" in out.stopped_because
    assert seen == list(out.steps)


def test_a_single_failing_step_followed_by_a_pass_is_noise() -> None:
    runner = FakeRunner(lambda n: 150.0 if n == 30 else 2.0 * n)
    out = linear(runner, ramp(), SLO)
    assert [s.users for s in out.steps] == [10, 20, 30, 40, 50, 60, 70]
    assert out.steps[2].slo_ok is False and out.steps[3].slo_ok is True


def test_alternating_failures_never_confirm() -> None:
    runner = FakeRunner(lambda n: 150.0 if (n // 10) % 2 else 10.0)
    out = linear(runner, ramp(max_users=60), SLO)
    assert [s.users for s in out.steps] == [10, 20, 30, 40, 50, 60]
    assert "isolated steps (10, 30, 50 users)" in out.stopped_because


def test_never_breaking_stops_at_max_users() -> None:
    runner = FakeRunner(lambda n: 1.0)
    out = linear(runner, ramp(max_users=40), SLO)
    assert [s.users for s in out.steps] == [10, 20, 30, 40]
    assert out.stopped_because.startswith("reached max_users (40) without breaking the SLO")


def test_breaking_only_at_the_last_level_is_unconfirmed() -> None:
    runner = FakeRunner(lambda n: 500.0 if n == 40 else 1.0)
    out = linear(runner, ramp(max_users=40), SLO)
    assert [s.users for s in out.steps] == [10, 20, 30, 40]
    assert "broke at the last step" in out.stopped_because
    assert "unconfirmed" in out.stopped_because


def test_off_grid_max_users_is_never_exceeded() -> None:
    runner = FakeRunner(lambda n: 1.0)
    out = linear(runner, ramp(max_users=45), SLO)
    assert [s.users for s in out.steps] == [10, 20, 30, 40]
    assert "last level (40 users) below max_users (45)" in out.stopped_because


def test_breaking_at_the_first_two_steps() -> None:
    runner = FakeRunner(lambda n: 1000.0)
    out = linear(runner, ramp(), SLO)
    assert [s.users for s in out.steps] == [10, 20]


def test_step_timing_index_and_phase() -> None:
    runner = FakeRunner(lambda n: 2.0 * n)
    out = linear(runner, ramp(step_seconds=8.0, settle_seconds=2.0), SLO)
    for call in runner.calls:
        # a step lasts step_seconds in total: settle, then a fixed measuring window
        assert call == {
            "users": call["users"],
            "settle_s": 2.0,
            "min_s": 6.0,
            "max_s": 6.0,
            "min_samples": 0,
            "phase": "ramp",
        }
    assert [s.index for s in out.steps] == list(range(len(out.steps)))
    assert all(s.phase == "ramp" for s in out.steps)
    starts = [s.started_s for s in out.steps]
    assert starts == sorted(starts) and starts[0] == 2.0 and starts[1] == 10.0


def test_default_settle_is_used_when_not_set() -> None:
    runner = FakeRunner(lambda n: 1.0)
    linear(runner, ramp(step_seconds=10.0, settle_seconds=None, max_users=10), SLO)
    assert runner.calls[0]["settle_s"] == 2.5
    assert runner.calls[0]["max_s"] == 7.5


def test_settle_longer_than_the_step_is_rejected() -> None:
    with pytest.raises(ValueError, match="must exceed the settle time"):
        linear(FakeRunner(lambda n: 1.0), ramp(step_seconds=2.0, settle_seconds=2.0), SLO)


def test_interrupt_propagates_after_reporting_finished_steps() -> None:
    seen: list[StepStats] = []

    def on_step(step: StepStats) -> None:
        seen.append(step)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        linear(FakeRunner(lambda n: 1.0), ramp(), SLO, on_step=on_step)
    assert [s.users for s in seen] == [10, 20]


def test_strategy_registry() -> None:
    assert STRATEGIES["linear"] is linear
