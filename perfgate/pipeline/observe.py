"""Telemetry beside the load: which sources watch a staged place, and a step runner that records
the system under test's resources over each level's measuring window.

The gate never sees telemetry: :class:`Observed` is a :class:`~perfgate.search.StepRunner` like
any other, whose steps carry ``resources``. Telemetry never fails a run: a source that cannot be
measured is named in each step's ``resources.missing``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from perfgate import telemetry
from perfgate.load.runner import LocustRunner
from perfgate.models import Scenario, StepStats
from perfgate.staging import StagedTarget
from perfgate.telemetry import Recorder, Sampler

NO_SOURCE = (
    "no telemetry source for an existing target (--target / staging none): add "
    "metrics.prometheus to the scenario to measure its resources"
)


def recorder_for(
    scen: Scenario, staged: StagedTarget, stack: contextlib.ExitStack, *, exclude: str | None
) -> Recorder | None:
    """A started recorder of every source this place offers; None when metrics are disabled."""
    if not scen.metrics.enabled:
        return None
    samplers: list[Sampler] = []
    missing: list[str] = []
    if staged.provider == "embedded":
        exchange = telemetry.ExchangeSampler(staged.url)
        stack.callback(exchange.close)
        samplers.append(exchange)
        if staged.pid is not None:
            # an asyncio server runs on one thread: one core is all it can use
            samplers.append(telemetry.ProcessSampler(staged.pid, name="exchange", cpu_limit=1.0))
    elif staged.provider == "kubernetes" and staged.api_get is not None and staged.namespace:
        samplers.append(
            telemetry.KubeSampler(staged.api_get, staged.namespace, exclude_prefix=exclude)
        )
    if scen.metrics.prometheus is not None:
        prom = telemetry.PrometheusSampler(
            scen.metrics.prometheus, namespace=staged.namespace or ""
        )
        stack.callback(prom.close)
        samplers.append(prom)
    if not samplers:
        missing.append(NO_SOURCE)
    recorder = Recorder(samplers, missing=missing)
    stack.enter_context(recorder)
    return recorder


class Observed:
    """A :class:`LocustRunner` whose measured steps carry the window's ``resources``."""

    def __init__(self, runner: LocustRunner, recorder: Recorder) -> None:
        self.runner = runner
        self.recorder = recorder

    def measure(self, users: int, **how: Any) -> StepStats:
        step = self.runner.measure(users, **how)
        end = self.recorder.clock()
        self.recorder.sample_now(healthy_only=True)  # the window's closing edge, not the next tick
        resources = self.recorder.window(end - step.duration_s, end)
        return dataclasses.replace(step, resources=resources)

    def hold(self, users: int, seconds: float) -> None:
        self.runner.hold(users, seconds)
