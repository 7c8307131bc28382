"""The environment's noise model: estimated from A/A runs, stored beside the baselines.

``perfgate calibrate`` runs the same build several times in a row on the same target (A/A) and
measures how much the gate's metric, ``ln(throughput at the SLO boundary)``, moves from run to run
when nothing changed. Two spreads matter to the verdict:

* ``sd_log``: the SD of one run's log throughput (a candidate against a *stored* baseline,
  measured at another time);
* ``pair_sd_log``: the SD of the log ratio of two *consecutive* runs (paired mode, where the
  previous release and the candidate are measured interleaved), estimated from successive
  differences so that slow drift, which pairing cancels, does not inflate it.

Each comes with its degrees of freedom; the verdict pools it with the replicates' own spread
(a moderated variance, as limma does with few replicates). Without a calibration the verdict uses
:func:`default_noise`, a deliberately conservative prior justified by the simulation figures in
``docs/verdict.md``.

The model is stored as ``<baseline_dir>/<scenario>/noise.json`` (schema 1) through
:mod:`perfgate.store` (read strictly, written atomically) under the scenario folder's lock.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import filelock

from perfgate import store
from perfgate._version import __version__
from perfgate.errors import BaselineError, OutputError
from perfgate.models import Saturation

__all__ = [
    "DEFAULT_DF",
    "DEFAULT_PAIR_SD_LOG",
    "DEFAULT_SD_LOG",
    "MIN_RUNS",
    "NOISE_FILE",
    "NoiseModel",
    "SideBySideRun",
    "default_noise",
    "estimate",
    "estimate_side_by_side",
    "format_noise",
    "load_noise",
    "noise_path",
    "required_runs",
    "save_noise",
]

NOISE_KIND = "perfgate-noise"
NOISE_SCHEMA = 1
NOISE_FILE = "noise.json"
MIN_RUNS = 3  # fewer A/A runs cannot estimate a spread worth pooling

# The default prior: what the verdict assumes before `perfgate calibrate` has run. It is the
# spread the simulator's "shared" noise profile produces (docs/verdict.md), rounded up, and counts
# as much evidence as DEFAULT_DF + 1 calibration runs: conservative enough that a single run on a
# noisy shared machine rarely blocks by mistake, and overruled quickly by the replicates' own
# spread once there are several.
DEFAULT_SD_LOG = 0.07
DEFAULT_PAIR_SD_LOG = 0.08
DEFAULT_DF = 2.0

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_FROZEN)
class NoiseModel:
    """Run-to-run noise of ``ln(throughput at the SLO)`` in one environment."""

    sd_log: float  # SD of one run (stored-baseline comparisons)
    df: float  # its degrees of freedom (runs − 1); large for an assumed value
    pair_sd_log: float  # SD of the log ratio of two consecutive runs (paired mode)
    pair_df: float
    runs: int = 0
    source: Literal["calibrated", "default"] = "calibrated"
    scenario: str = ""
    created_at: str = ""
    perfgate_version: str = ""
    users_sd_log: float | None = None  # the same for the users count (reported, not gated)
    values_rps: tuple[float, ...] = ()  # the A/A runs' throughput at the SLO, in run order
    users: tuple[float, ...] = ()
    censored_runs: int = 0
    fingerprint: dict[str, Any] = field(default_factory=dict)
    sessions: tuple[tuple[float, ...], ...] = ()  # values_rps split by calibration session
    # The side-by-side gate's own procedure, A/A: two fresh deployments of one build measured
    # together at the boundary (``perfgate calibrate`` on embedded or Kubernetes staging).
    deploy_sd_log: float | None = None  # SD of a fixed difference between two deployments
    between_sd_log: float | None = None  # SD of a deployment's goodput from one run to the next
    aa_log_ratios: tuple[float, ...] = ()  # per A/A run: mean log goodput ratio of the two
    aa_log_goodput: tuple[float, ...] = ()  # per A/A run: mean log goodput of the first one

    def describe(self) -> str:
        """One line: where the prior comes from and how big it is."""
        if self.source == "default":
            return (
                f"default noise prior (no calibration): run-to-run SD {self.sd_log:.1%}, "
                f"pair SD {self.pair_sd_log:.1%}"
            )
        when = f" on {self.created_at[:10]}" if self.created_at else ""
        many = f" in {len(self.sessions)} sessions" if len(self.sessions) > 1 else ""
        side = (
            f", deployment difference SD {self.deploy_sd_log:.1%}"
            if self.deploy_sd_log is not None
            else ""
        )
        return (
            f"calibrated noise ({self.runs} A/A runs{many}{when}): "
            f"run-to-run SD {self.sd_log:.1%}, pair SD {self.pair_sd_log:.1%}{side}"
        )


def default_noise() -> NoiseModel:
    """The conservative prior used when no calibration is stored."""
    return NoiseModel(
        sd_log=DEFAULT_SD_LOG,
        df=DEFAULT_DF,
        pair_sd_log=DEFAULT_PAIR_SD_LOG,
        pair_df=DEFAULT_DF,
        runs=0,
        source="default",
        perfgate_version=__version__,
    )


def estimate(
    runs: Sequence[Saturation],
    *,
    scenario: str = "",
    fingerprint: dict[str, Any] | None = None,
    previous: NoiseModel | None = None,
) -> NoiseModel:
    """Noise model from A/A runs of one build, in the order they ran.

    Runs that did not find the boundary (censored) are left out and counted. Raises ValueError
    with fewer than ``MIN_RUNS`` usable runs. With ``previous`` (the stored model) this session
    is added to the earlier ones: ``sd_log`` then spans every session, so drift between days —
    which a stored baseline suffers and one back-to-back session cannot see — enters it, while
    ``pair_sd_log`` only uses differences within a session.
    """
    usable = [
        r
        for r in runs
        if r.censored == "no" and r.throughput_rps is not None and r.throughput_rps > 0
    ]
    if len(usable) < MIN_RUNS:
        raise ValueError(
            f"calibration needs at least {MIN_RUNS} runs that found the SLO boundary, "
            f"got {len(usable)} of {len(runs)}"
        )
    session = tuple(float(r.throughput_rps or 0.0) for r in usable)
    sessions = (*(previous.sessions if previous is not None else ()), session)
    values = tuple(v for s in sessions for v in s)
    logs = [math.log(v) for v in values]
    sd = statistics.stdev(logs)
    # Successive differences: E[(y[i+1] − y[i])²] is the variance of a consecutive pair's log
    # ratio, which is what paired mode sees; slow drift inflates sd but not this.
    diffs = [
        math.log(b) - math.log(a) for s in sessions for a, b in itertools.pairwise(s) if a and b
    ]
    pair_sd = math.sqrt(sum(d * d for d in diffs) / len(diffs))
    users = [float(r.users) for r in usable if r.users]
    if previous is not None:
        users = [*previous.users, *users]
    users_sd = statistics.stdev(math.log(u) for u in users) if len(users) >= 2 else None
    return NoiseModel(
        sd_log=sd,
        df=float(len(logs) - 1),
        # successive differences overlap, so they carry about 2/3 of the independent df
        pair_sd_log=pair_sd,
        pair_df=max(1.0, round(2 * len(diffs) / 3, 1)),
        runs=len(runs) + (previous.runs if previous is not None else 0),
        source="calibrated",
        scenario=scenario,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        perfgate_version=__version__,
        users_sd_log=users_sd,
        values_rps=values,
        users=tuple(users),
        sessions=sessions,
        censored_runs=len(runs) - len(usable) + (previous.censored_runs if previous else 0),
        fingerprint=dict(fingerprint or {}),
    )


UPPER_QUANTILE = 0.10  # deployment SD: the 90 % upper bound, so a few sessions err on the safe side


@dataclass(**_FROZEN)
class SideBySideRun:
    """One A/A run of the gate's procedure: two fresh deployments of one build, side by side."""

    saturation: Saturation  # the first deployment's located boundary
    log_ratios: tuple[float, ...]  # per window pair: ln(goodput first / goodput second)
    log_goodput: float  # mean log goodput of the first deployment's windows


def estimate_side_by_side(
    runs: Sequence[SideBySideRun],
    *,
    scenario: str = "",
    fingerprint: dict[str, Any] | None = None,
    previous: NoiseModel | None = None,
) -> NoiseModel:
    """Noise model from A/A runs of the side-by-side procedure (and their located boundaries).

    ``deploy_sd_log``: two deployments of the same build differ by a fixed ``δ`` for the whole
    of a run; each run's mean log ratio is ``δ₁ − δ₂`` plus window noise, so the deployment SD
    is ``√(mean(m²) / 2)`` — window noise included, which errs on the safe side — taken at its
    90 % upper confidence bound. ``between_sd_log``: the SD of a deployment's mean log goodput
    from one run (fresh staging) to the next, across every session stored so far. Sessions
    accumulate like :func:`estimate`'s.
    """
    from scipy import stats

    model = estimate(
        [r.saturation for r in runs],
        scenario=scenario,
        fingerprint=fingerprint,
        previous=previous,
    )
    ratios = [statistics.fmean(r.log_ratios) for r in runs if r.log_ratios]
    ratios = [*(previous.aa_log_ratios if previous is not None else ()), *ratios]
    goodput = [r.log_goodput for r in runs if r.log_ratios]
    goodput = [*(previous.aa_log_goodput if previous is not None else ()), *goodput]
    if len(ratios) < MIN_RUNS:
        raise ValueError(
            f"calibration needs at least {MIN_RUNS} side-by-side runs that measured windows, "
            f"got {len(ratios)}"
        )
    k = len(ratios)
    mean_square = sum(m * m for m in ratios) / k
    upper = k / float(stats.chi2.ppf(UPPER_QUANTILE, k))
    return dataclasses.replace(
        model,
        deploy_sd_log=math.sqrt(mean_square / 2 * upper),
        between_sd_log=statistics.stdev(goodput) if len(goodput) >= 2 else None,
        aa_log_ratios=tuple(ratios),
        aa_log_goodput=tuple(goodput),
    )


def required_runs(sd_log: float, *, regression: float = 0.10, power: float = 0.9) -> int:
    """Replicates per build for ``power`` to block a true ``regression`` (98 % two-sided t)."""
    from scipy import stats  # local: calibration's reading and writing need no scipy

    effect = -math.log(1.0 - regression)
    for k in range(1, 101):
        df = max(1, 2 * k - 2) + DEFAULT_DF
        se = sd_log * math.sqrt(2.0 / k)
        if (float(stats.t.ppf(0.99, df)) + float(stats.norm.ppf(power))) * se <= effect:
            return k
    return 100


def format_noise(model: NoiseModel) -> str:
    """What `perfgate calibrate` prints: the spreads and what they cost."""
    lines = [model.describe()]
    if model.values_rps:
        vals = ", ".join(f"{v:.0f}" for v in model.values_rps)
        lines.append(f"throughput at the SLO per run (req/s): {vals}")
    if model.censored_runs:
        lines.append(
            f"{model.censored_runs} run(s) did not find the SLO boundary and were left out"
        )
    lines.append(
        "replicates per build to block a 10 % regression 9 times in 10: "
        f"stored baseline {required_runs(model.sd_log)}, paired "
        f"{required_runs(model.pair_sd_log / math.sqrt(2))}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


def noise_path(baseline_dir: Path, scenario: str) -> Path:
    """``<baseline_dir>/<scenario>/noise.json`` (the folder named as the baselines' folder);
    neither entry may be a link (:func:`perfgate.store.confined`, exit 2)."""
    return store.confined(baseline_dir, store.safe_component(scenario, "scenario"), NOISE_FILE)


def load_noise(baseline_dir: Path, scenario: str) -> NoiseModel | None:
    """The stored noise model of ``scenario`` or None; a broken file is a BaselineError (exit 2)."""
    path = noise_path(baseline_dir, scenario)
    if not path.exists():
        return None
    data = store.load_json(
        path, schema=NOISE_SCHEMA, label="noise model", error=BaselineError, kind=NOISE_KIND
    )
    try:
        return _from_document(data, f"noise model {path}")
    except KeyError as exc:
        raise BaselineError(f"noise model {path}: missing key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise BaselineError(f"noise model {path}: {exc}") from exc


def _number(data: dict[str, Any], key: str, *, positive: bool = False) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"key {key!r} must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"key {key!r} must be {'> 0' if positive else '≥ 0'}, got {value!r}")
    return float(value)


def _from_document(data: dict[str, Any], prefix: str) -> NoiseModel:
    """Every key checked by type (BaselineError naming it), the numbers also by range."""

    def get(key: str, tp: Any, default: Any) -> Any:
        return store.typed(data, key, tp, prefix=prefix, error=BaselineError, default=default)

    floats = tuple[float, ...]
    return NoiseModel(
        sd_log=_number(data, "sd_log"),
        df=_number(data, "df", positive=True),
        pair_sd_log=_number(data, "pair_sd_log"),
        pair_df=_number(data, "pair_df", positive=True),
        runs=int(_number(data, "runs")),
        source="calibrated",
        scenario=get("scenario", str, ""),
        created_at=get("created_at", str, ""),
        perfgate_version=get("perfgate_version", str, ""),
        users_sd_log=get("users_sd_log", float | None, None),
        values_rps=get("values_rps", floats, ()),
        users=get("users", floats, ()),
        censored_runs=get("censored_runs", int, 0),
        fingerprint=get("fingerprint", dict[str, Any] | None, None) or {},
        sessions=get("sessions", tuple[floats, ...], ()),
        deploy_sd_log=_optional(data, "deploy_sd_log"),
        between_sd_log=_optional(data, "between_sd_log"),
        aa_log_ratios=get("aa_log_ratios", floats, ()),
        aa_log_goodput=get("aa_log_goodput", floats, ()),
    )


def _optional(data: dict[str, Any], key: str) -> float | None:
    return None if data.get(key) is None else _number(data, key)


def _document(model: NoiseModel) -> dict[str, Any]:
    return {
        "kind": NOISE_KIND,
        "schema": NOISE_SCHEMA,
        "metric": "ln(throughput_rps at the SLO boundary)",
        "scenario": model.scenario,
        "created_at": model.created_at,
        "perfgate_version": model.perfgate_version,
        "runs": model.runs,
        "censored_runs": model.censored_runs,
        "sd_log": model.sd_log,
        "df": model.df,
        "pair_sd_log": model.pair_sd_log,
        "pair_df": model.pair_df,
        "users_sd_log": model.users_sd_log,
        "values_rps": list(model.values_rps),
        "users": list(model.users),
        "fingerprint": model.fingerprint,
        "sessions": [list(s) for s in model.sessions],
        "deploy_sd_log": model.deploy_sd_log,
        "between_sd_log": model.between_sd_log,
        "aa_log_ratios": list(model.aa_log_ratios),
        "aa_log_goodput": list(model.aa_log_goodput),
    }


def save_noise(model: NoiseModel, baseline_dir: Path, scenario: str) -> Path:
    """Write ``noise.json`` atomically (replacing an older calibration); returns its path."""
    path = noise_path(baseline_dir, scenario)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(store.lock_path(path.parent), timeout=30):
            store.write_json(path, _document(model), what="noise model")
    except filelock.Timeout as exc:
        raise OutputError(f"noise model {path}: the folder is locked by another perfgate") from exc
    except OSError as exc:  # the folder or the lock file could not be created
        raise OutputError(f"cannot write noise model {path}: {exc.strerror or exc}") from exc
    return path
