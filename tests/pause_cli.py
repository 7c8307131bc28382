"""``python tests/pause_cli.py STAGE perfgate-args…``: the real CLI, paused inside one stage.

A test sends SIGINT/SIGTERM to this process once it printed ``PAUSED <stage>`` on stderr, so the
signal lands in that stage every time, not when a race allows. The pause is a monkeypatch in
this wrapper (perfgate itself has no test hooks); it pauses once, so the partial report written
after the signal is not paused again. Stages:

- ``provisioning``: the reference exchange is running, before its health check;
- ``ramp``: announced after each measured level (nothing paused: the signal lands mid-ramp);
- ``analysis``: inside the analysis of the measured steps;
- ``report``: while index.html renders (result.json and the CSVs are already written);
- ``report-twice``: the same, and again while the partial (aborted) report renders;
- ``bug``: like ``ramp``, and the analysis raises ZeroDivisionError (an internal error);
- ``none``: no pause (the plain CLI).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PAUSE_S = 60.0


def _pause(stage: str) -> None:
    print(f"PAUSED {stage}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + PAUSE_S
    while time.monotonic() < deadline:
        time.sleep(0.05)


def _once(stage: str, original: Any, times: int = 1) -> Any:
    state = {"paused": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if state["paused"] < times:
            state["paused"] += 1
            _pause(stage)
        return original(*args, **kwargs)

    return wrapper


def install(stage: str) -> None:
    if stage == "provisioning":
        import perfgate.staging.embedded as embedded

        embedded._await_health = _once(stage, embedded._await_health)
    elif stage in ("ramp", "bug"):
        from perfgate.console import Progress

        if stage == "bug":
            from perfgate import analysis

            def buggy(*args: Any, **kwargs: Any) -> Any:
                raise ZeroDivisionError("injected bug")

            analysis.saturation = buggy  # called once the ramp ends, children still running

        from perfgate.events import StepMeasured

        real_call = Progress.__call__

        def on_event(self: Progress, event: Any) -> None:
            real_call(self, event)
            if isinstance(event, StepMeasured):  # the pipeline has recorded the level by now
                print(f"PAUSED {stage}", file=sys.stderr, flush=True)

        Progress.__call__ = on_event  # type: ignore[method-assign]
    elif stage == "analysis":
        from perfgate import analysis

        analysis.diagnostics = _once(stage, analysis.diagnostics)
    elif stage in ("report", "report-twice"):
        import perfgate.report.html as html

        html.render_html = _once(stage, html.render_html, times=2 if stage.endswith("twice") else 1)
    elif stage != "none":
        raise SystemExit(f"unknown stage {stage!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from perfgate.cli import main

    main(sys.argv[2:])
