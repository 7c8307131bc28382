#!/usr/bin/env python3
"""Install everything perfgate's test suite needs on a fresh Debian machine, into THIS interpreter.

    python scripts/install_test_deps.py && python -m pytest

The Python packages (perfgate editable, with its ``test`` extra: pytest, ruff, mypy,
import-linter) go into the environment of the interpreter that runs this script, so the same
``python`` (a venv's, say) then runs the suite without activating anything. The system programs
some tests drive come from Debian's packages, installed with apt when missing and when running as
root (otherwise the script says what to install and goes on):

- ``chromium`` (and fonts): the report's browser test (tests/test_report_browser.py)
- ``prometheus``: a real Prometheus server for the metrics tests
- ``git``: baselines kept on a git branch (a bare repository on disk as the remote)

``.ci/run`` calls exactly the README's command, so CI and a new contributor do the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# program on PATH -> Debian packages that provide it
SYSTEM = {
    "chromium": ["chromium", "fonts-dejavu-core"],
    "prometheus": ["prometheus"],
    "git": ["git"],
}


def missing_packages() -> list[str]:
    """Debian packages whose program is not on PATH (prometheus also lives in /usr/bin)."""
    return [pkg for prog, pkgs in SYSTEM.items() if shutil.which(prog) is None for pkg in pkgs]


def apt_install(packages: list[str]) -> None:
    """apt-get install ``packages`` without starting their services (there is no init here)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d 101: packages (prometheus) must not try to start their daemons at install
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if made_policy:
            policy.unlink()


def main() -> int:
    packages = missing_packages()
    if packages:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            print(f"install-test-deps: apt-get install {' '.join(packages)}", file=sys.stderr)
            apt_install(packages)
        else:
            print(
                "install-test-deps: warning: the tests need Debian packages "
                f"{' '.join(packages)}; install them as root (apt-get install ...)",
                file=sys.stderr,
            )
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"]
    print(f"install-test-deps: {' '.join(pip[2:])} into {sys.prefix}", file=sys.stderr)
    return subprocess.run(pip, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
