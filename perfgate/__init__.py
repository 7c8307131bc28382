"""perfgate: a performance-regression release gate.

What is listed in ``__all__`` is the public API; everything else may change between releases.
Only the error tree and the version are imported eagerly: the load engine child process runs
``python -m perfgate.load.engine``, which imports this package before ``locust``, and nothing
but the standard library may come first there. The records and the scenario loader are
imported on first access.
"""

from typing import Any

from perfgate._version import __version__
from perfgate.errors import (
    BaselineError,
    InfrastructureError,
    InputError,
    Interrupted,
    LoadError,
    OutputError,
    PerfgateError,
    ResultFileError,
    ScenarioError,
    StagingError,
    TargetUnreachable,
)

_LAZY = {
    "EndpointStats": "perfgate.models",
    "GateResult": "perfgate.models",
    "RunResult": "perfgate.models",
    "Saturation": "perfgate.models",
    "Scenario": "perfgate.models",
    "StepStats": "perfgate.models",
    "from_jsonable": "perfgate.models",
    "to_jsonable": "perfgate.models",
    "load_scenario": "perfgate.scenario",
    "parse_scenario": "perfgate.scenario",
}

__all__ = [
    "BaselineError",
    "EndpointStats",
    "GateResult",
    "InfrastructureError",
    "InputError",
    "Interrupted",
    "LoadError",
    "OutputError",
    "PerfgateError",
    "ResultFileError",
    "RunResult",
    "Saturation",
    "Scenario",
    "ScenarioError",
    "StagingError",
    "StepStats",
    "TargetUnreachable",
    "__version__",
    "from_jsonable",
    "load_scenario",
    "parse_scenario",
    "to_jsonable",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'perfgate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
