"""The house rules, checked like any other behaviour: public API, lint, types, layering."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import perfgate

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_pinned() -> None:
    assert sorted(perfgate.__all__) == [
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
    for name in perfgate.__all__:
        assert hasattr(perfgate, name)


def test_importing_perfgate_stays_light() -> None:
    code = (
        "import sys, perfgate; heavy = {'locust', 'gevent', 'kubernetes', 'matplotlib', "
        "'pandas', 'aiohttp', 'scipy'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


HEAVY = ("scipy", "numpy", "matplotlib", "pandas", "locust", "gevent", "kubernetes", "jinja2")


def _heavy_after(code: str) -> list[str]:
    """The heavy packages in sys.modules after ``code`` ran in a fresh interpreter."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_cli_module_imports_no_heavy_dependency() -> None:
    # `perfgate --help` and `--version` load only this; scipy alone costs ~2 s here
    assert _heavy_after("import perfgate.cli") == []


def test_validate_and_help_import_no_heavy_dependency() -> None:
    run = (
        "from perfgate.cli import _main\n"
        "assert _main(['validate', 'scenarios/exchange.yaml']) == 0\n"
        "assert _main(['run', '--help']) == 0"
    )
    assert _heavy_after(run) == []


def _tool(name: str) -> str:
    """``name`` from the running interpreter's environment (a venv need not be activated)."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        path = Path(folder) / name
        if path.is_file():
            return str(path)
    pytest.fail(f"{name} is not installed beside {sys.executable}: pip install -e '.[test]'")


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
        ["lint-imports"],
    ],
    ids=["ruff", "ruff-format", "mypy", "import-contracts"],
)
def test_code_quality_gate(command: list[str]) -> None:
    out = subprocess.run(
        [_tool(command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
