"""The gate's two sides on real targets: Locust runners against staged deployments.

:class:`LiveSides` is what :func:`perfgate.gate.run_gate` drives in ``perfgate run``; the
simulator gives the same function simulated deployments instead (``perfgate.simulate``). A
*place* is one staged deployment with the runner that loads it; the builds map to places, and a
cross-over swaps which build each place serves (``StagedTarget.restage``), so the runners keep
their URLs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from perfgate.events import EventSink
from perfgate.gate.design import measure_window
from perfgate.load.runner import LocustRunner
from perfgate.models import StepStats
from perfgate.pipeline.observe import Observed
from perfgate.search import StepRunner
from perfgate.staging import StagedTarget
from perfgate.telemetry import Recorder

IDLE_S = 0.1  # a hold with no users: the engine stops its users and answers


@dataclass(slots=True)
class Place:
    staged: StagedTarget
    runner: LocustRunner
    recipe: dict[str, Any]  # what this place serves now
    recorder: Recorder | None = None  # the telemetry of this place's deployment


class LiveSides:
    """Candidate (and previous release) places for :func:`perfgate.gate.run_gate`."""

    def __init__(self, places: list[Place]) -> None:
        self.places = places
        self.where = {"candidate": 0, "baseline": 1 if len(places) > 1 else 0}
        self.started = time.monotonic()

    def runner(self, build: str) -> StepRunner:
        """The build's runner; its steps carry the place's telemetry when it has any."""
        place = self.places[self.where[build]]
        return place.runner if place.recorder is None else Observed(place.runner, place.recorder)

    def idle(self, build: str) -> None:
        self.runner(build).hold(0, IDLE_S)

    def measure_together(
        self, users: int, *, settle_s: float, window_s: float
    ) -> tuple[StepStats, StepStats]:
        """Both builds over the same seconds: the baseline's runner on a helper thread."""
        got: dict[str, Any] = {}

        def measure(build: str) -> None:
            try:
                got[build] = measure_window(
                    self.runner(build), users, settle_s=settle_s, window_s=window_s
                )
            except BaseException as exc:  # re-raised on the caller's thread
                got[build] = exc

        helper = threading.Thread(target=measure, args=("baseline",), daemon=True)
        helper.start()
        measure("candidate")
        helper.join()
        for build in ("candidate", "baseline"):
            if isinstance(got[build], BaseException):
                raise got[build]
        self.idle("candidate")
        self.idle("baseline")
        return got["candidate"], got["baseline"]

    def can_swap(self) -> bool:
        return len(self.places) == 2 and all(p.staged.restage is not None for p in self.places)

    def swap(self) -> None:
        """Each place now serves the other build (same URL, the other release's recipe).

        Both places restage at once (a Kubernetes rollout takes a while); the first error is
        raised after both have finished, so neither is left half done.
        """
        a, b = self.places
        a.recipe, b.recipe = b.recipe, a.recipe
        errors: list[BaseException] = []

        def restage(place: Place) -> None:
            try:
                assert place.staged.restage is not None
                place.staged.restage(place.recipe)
            except BaseException as exc:  # re-raised on the caller's thread
                errors.append(exc)

        helper = threading.Thread(target=restage, args=(b,), daemon=True)
        helper.start()
        restage(a)
        helper.join()
        if errors:
            raise errors[0]
        self.where = {"candidate": self.where["baseline"], "baseline": self.where["candidate"]}

    def swap_cost_s(self) -> float:
        """How long staging took (a swap restages both places at once): the schedule's guess."""
        return max(float(p.staged.details.get("provision_s") or 1.0) for p in self.places)

    def swap_renews_placement(self) -> bool:
        """Whether a swap puts the builds on new machines (Kubernetes re-creates the pods)."""
        return any(p.staged.provider == "kubernetes" for p in self.places)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


def locked(sink: EventSink) -> EventSink:
    """``sink`` callable from two measuring threads at once."""
    lock = threading.Lock()

    def call(event: Any) -> None:
        with lock:
            sink(event)

    return call
