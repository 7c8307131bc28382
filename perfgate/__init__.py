"""perfgate: a performance-regression release gate.

What is listed in ``__all__`` is the public API; everything else may change between releases.
Heavy stages (load, report, Kubernetes) are imported by the pipeline only when used.
"""

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
from perfgate.models import (
    EndpointStats,
    GateResult,
    RunResult,
    Saturation,
    Scenario,
    StepStats,
    from_jsonable,
    to_jsonable,
)
from perfgate.scenario import load_scenario, parse_scenario

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
