"""Typed progress events (perfgate.events) and how the console renders each of them."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest
from rich.console import Console

from perfgate import events
from perfgate.console import Progress, look_line, window_line
from perfgate.events import (
    Event,
    Log,
    Look,
    Replicate,
    StageChanged,
    StepDone,
    StepMeasured,
    StepStarted,
    Tick,
    Window,
)
from perfgate.models import StepStats


def stats(users: int = 40, *, ok: bool = True) -> StepStats:
    return StepStats(
        users=users,
        duration_s=7.5,
        requests=6090,
        failures=0 if ok else 300,
        throughput_rps=812.0,
        p50_ms=21.0,
        p95_ms=48.1 if ok else 612.0,
        p99_ms=90.5 if ok else 900.0,
        error_rate=0.0 if ok else 0.049,
        slo_ok=ok,
        slo_reason="" if ok else "p95 612 ms > 250 ms",
    )


STARTED = StepStarted(
    step=3,
    phase="ramp",
    users=40,
    record=True,
    settle_s=2.5,
    min_s=7.5,
    max_s=7.5,
    min_samples=0,
    slo_p95_ms=250.0,
    slo_error_rate=0.01,
)
TICK = Tick(
    t_s=31.0,
    users=40,
    throughput_rps=812.0,
    p95_ms=48.1,
    failures=0,
    error_rate=0.0,
    cpu_percent=31.5,
    recording=True,
    step=3,
    phase="ramp",
    elapsed_s=4.0,
)


def lines(*sent: Event | dict[str, Any]) -> list[str]:
    """The plain (non-TTY) lines the console prints for ``sent``, without the elapsed time."""
    out = io.StringIO()
    with Progress(out, live=False) as progress:
        for event in sent:
            progress(event)
    return [line.split("s ", 1)[1] for line in out.getvalue().splitlines()]


def table_text(progress: Progress) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(progress._table())
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    return text


def test_every_event_kind_is_a_frozen_keyword_only_record() -> None:
    assert {cls.__name__ for cls in events.EVENT_TYPES} == {
        "StepStarted",
        "Tick",
        "StepDone",
        "StageChanged",
        "StepMeasured",
        "Replicate",
        "Log",
        "Window",
        "Look",
    }
    for cls in events.EVENT_TYPES:
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and cls.__dataclass_fields__ and hasattr(cls, "__slots__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        TICK.users = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Log("positional")  # type: ignore[misc]


def test_a_measured_step_prints_one_line_per_build() -> None:
    out = lines(
        StepMeasured(step=stats()), StepMeasured(step=stats(80, ok=False), build="baseline")
    )
    assert len(out) == 2
    assert out[0].startswith("ok   users    40     812.0 req/s")
    assert "p95   48.1" in out[0] and "errors  0.00%" in out[0]
    assert out[1].startswith("[baseline] FAIL users    80")
    assert out[1].endswith("(p95 612 ms > 250 ms)")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (StageChanged(stage="staging", detail="embedded"), "provisioning staging (embedded)"),
        (StageChanged(stage="load", detail="http://127.0.0.1:8080"), "ramping users against"),
        (StageChanged(stage="analysis"), "analysing"),
        (StageChanged(stage="report"), "writing the report"),
        (StageChanged(stage="pairing {x}"), "pairing {x}"),
        (Log(message="calibration run 1/3"), "calibration run 1/3"),
        (Replicate(index=2, of=3, build="candidate"), "replicate 2/3: candidate"),
        (Replicate(index=1, of=1, build="baseline"), "replicate 1/1: baseline"),
    ],
)
def test_pipeline_events_print_one_line(event: Event, expected: str) -> None:
    out = lines(event)
    assert len(out) == 1 and out[0].startswith(expected), out


def test_a_single_candidate_replicate_says_nothing() -> None:
    assert lines(Replicate(index=1, of=1, build="candidate")) == []


def test_window_and_look_render_one_line_each() -> None:
    window = Window(build="baseline", index=7, users=120, throughput_rps=1234.5, p95_ms=None)
    look = Look(
        index=2, pairs=12, verdict="block", ratio=0.912, ratio_ci=(0.88, 0.95), elapsed_s=184.2
    )
    early = Look(index=1, pairs=6, verdict="continue", ratio=None, ratio_ci=None, elapsed_s=61.0)
    out = lines(window, look, early)
    assert out == [window_line(window), look_line(look), look_line(early)]
    assert window_line(window) == "window   7 baseline  users   120    1234.5 req/s  p95      - ms"
    assert look_line(look) == "look 2: 12 pairs  ratio 0.912 [0.880, 0.950]  → block  (184 s)"
    assert look_line(early) == "look 1: 6 pairs  ratio -  → continue  (61 s)"


def test_load_events_drive_the_live_row_and_print_nothing() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress(STARTED)
    assert (progress.current.users, progress.current.phase) == (40, "ramp")
    assert progress.current.throughput_rps is None
    progress(TICK)
    assert progress.current.throughput_rps == 812.0 and progress.current.p95_ms == 48.1
    row = [line for line in table_text(progress).splitlines() if "measuring" in line]
    assert len(row) == 1 and "812.0" in row[0] and "48.1" in row[0] and "ramp" in row[0]
    progress(StepDone(step=3, phase="ramp", users=40, stats=stats()))
    progress(StepMeasured(step=stats()))
    assert progress.current.users is None
    assert "measuring" not in table_text(progress)
    assert out.getvalue().count("\n") == 1  # only the measured step printed a line


def test_live_mode_prints_window_and_look_above_the_table() -> None:
    out = io.StringIO()
    with Progress(out, live=True) as progress:
        progress(Window(build="candidate", index=1, users=50, throughput_rps=400.0, p95_ms=30.0))
        progress(Look(index=1, pairs=4, verdict="pass", ratio=1.01, ratio_ci=None, elapsed_s=9.0))
        progress(StepMeasured(step=stats()))
    text = out.getvalue()
    assert "window   1 candidate" in text and "look 1: 4 pairs  ratio 1.010  → pass" in text
    assert "perfgate ramp" in text and "812.0" in text
