"""The only package that composes the stages: scenario → staging → load + gate → report.

- :mod:`.options`: what a run was asked to do (``RunOptions``), built once;
- :mod:`.run`: ``execute`` as preflight → measure (stage + gate) → judge → publish;
- :mod:`.sides`: the gate's two sides on real targets (Locust runners on staged places);
- :mod:`.tools`: Locust's web UI and ``calibrate``;
- :mod:`.check`: ``perfgate validate``.
"""

from typing import TYPE_CHECKING, Any

from perfgate.pipeline.options import RunOptions, default_release, prepare_scenario

if TYPE_CHECKING:
    from perfgate.pipeline.run import Outcome, check_writable, execute, run_folder
    from perfgate.pipeline.tools import calibrate, web_ui

# run and tools import the analysis (scipy) and the report: loaded on first use, so commands
# that only read a scenario (`perfgate validate`, `perfgate --help`) start in a fraction of a second
_LAZY = {
    "Outcome": "run",
    "check_writable": "run",
    "execute": "run",
    "run_folder": "run",
    "calibrate": "tools",
    "web_ui": "tools",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'perfgate.pipeline' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"perfgate.pipeline.{module}"), name)


__all__ = [
    "Outcome",
    "RunOptions",
    "calibrate",
    "check_writable",
    "default_release",
    "execute",
    "prepare_scenario",
    "run_folder",
    "web_ui",
]
