"""perfgate's exception tree and the exit codes it maps to.

::

    PerfgateError                 any failure perfgate can explain in one line
    ├── InputError                bad input                                   exit 2
    │   ├── ScenarioError         scenario file: YAML, schema, manifests
    │   ├── BaselineError         baseline file: corrupt, foreign, newer schema, exists
    │   └── ResultFileError       a result.json given to `perfgate report` / `baseline promote`
    ├── InfrastructureError       the environment failed us                   exit 3
    │   ├── StagingError          staging could not be provisioned / torn down
    │   ├── TargetUnreachable     the target did not answer before load started
    │   └── LoadError             the load engine failed
    ├── OutputError               a report or baseline could not be written   exit 3
    └── Interrupted               SIGINT (130) / SIGTERM (143)

A regression is a *result*, not an exception: verdicts map to 0 pass / 1 block / 4 inconclusive in
the CLI. Any other exception is a bug: the CLI prints its traceback and exits 70.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_BLOCK = 1
EXIT_INPUT = 2
EXIT_INFRA = 3
EXIT_INCONCLUSIVE = 4
EXIT_INTERNAL = 70
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class PerfgateError(Exception):
    """Base of every error perfgate reports as one line."""

    exit_code = EXIT_INTERNAL


class InputError(PerfgateError):
    """The user's input is wrong (CLI usage, scenario, baseline or result file)."""

    exit_code = EXIT_INPUT


class ScenarioError(InputError):
    """A scenario file (or a manifest it names) is malformed or invalid."""


class BaselineError(InputError):
    """A baseline file is corrupt, foreign, of a newer schema, or would be overwritten."""


class ResultFileError(InputError):
    """A saved result.json cannot be read."""


class InfrastructureError(PerfgateError):
    """Staging, the target or the load engine failed: not the release's fault."""

    exit_code = EXIT_INFRA


class StagingError(InfrastructureError):
    """Staging could not be provisioned (or torn down)."""


class TargetUnreachable(InfrastructureError):
    """The target did not answer before load started."""


class LoadError(InfrastructureError):
    """The load engine failed."""


class OutputError(PerfgateError):
    """A report or baseline could not be written (permissions, disk full)."""

    exit_code = EXIT_INFRA


class Interrupted(PerfgateError):
    """The run was stopped by a signal; everything was cleaned up."""

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}")
        self.signum = signum
        self.exit_code = 128 + signum
