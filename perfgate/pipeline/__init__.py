"""The only package that composes the stages: scenario → staging → load + gate → report.

- :mod:`.options`: what a run was asked to do (``RunOptions``), built once;
- :mod:`.run`: ``execute`` as preflight → measure (stage + gate) → judge → publish;
- :mod:`.sides`: the gate's two sides on real targets (Locust runners on staged places);
- :mod:`.tools`: Locust's web UI and ``calibrate``.
"""

from perfgate.pipeline.options import RunOptions, default_release, prepare_scenario
from perfgate.pipeline.run import Outcome, check_writable, execute, run_folder
from perfgate.pipeline.tools import calibrate, web_ui

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
