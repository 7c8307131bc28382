"""The harness: how often the shipped gate is wrong, measured on simulated targets.

Each trial is one whole gate: :func:`perfgate.gate.run_gate` — the function ``perfgate run``
calls — drives simulated deployments (:class:`SimSides`) instead of Locust runners. The
candidate has ``regression`` less capacity; the previous release runs next to it (side by side)
or was stored from an earlier session on the same machine class (stored). Nothing here decides
anything: it only counts verdicts and simulated seconds of load.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any, Literal

from perfgate import gate
from perfgate._version import __version__
from perfgate.gate import GateInputs
from perfgate.gate.design import Build, measure_window
from perfgate.models import BaselineRef, GateSpec, RampSpec, Saturation, Slo, StepStats
from perfgate.simulate.noise import NOISE_PROFILES, Deployment, NoiseProfile, Timeline
from perfgate.simulate.queue import SimulatedRunner, TargetModel

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}
TRUTH_DEPLOYMENTS = 4  # deployments × steps behind the floor interval's coverage
TRUTH_STEPS = 25
SWITCH_S = 0.5  # simulated seconds to stop one build's users and start the other's
# How each staging provider swaps the two deployments (cross-over): (can swap, seconds a swap
# costs, whether the swap re-draws the deployments' offsets). Embedded: both exchanges restart at
# their ports (about a second, measured by `provision_s`); Kubernetes: a rollout in each namespace
# (a minute is typical for a small service with readiness probes: --swap-seconds), new pods on
# whichever nodes the scheduler picks; an existing target (--baseline-target) cannot swap.
STAGINGS: dict[str, tuple[bool, float, bool]] = {
    "embedded": (True, 1.0, False),
    "kubernetes": (True, 60.0, True),
    "target": (False, 0.0, False),
}
Mode = Literal["side-by-side", "stored"]


@dataclass(**_FROZEN)
class Preset:
    """A simulated scenario: target, SLO, ramp, gate and noise."""

    name: str
    model: TargetModel
    slo: Slo
    ramp: RampSpec
    gate: GateSpec
    noise: NoiseProfile
    calibration_runs: int = 10


PRESETS: dict[str, Preset] = {
    # The default scenario (scenarios/exchange.yaml; tests/test_simulate.py holds them equal) on
    # the reference exchange: 16 slots × 15.2 ms, p95 ≤ 500 ms (N* ≈ 526); some service-time
    # spread stands for HTTP overhead; a shared machine.
    "exchange": Preset(
        name="exchange",
        model=TargetModel(servers=16, service_ms=15.2, service_cv=0.5, network_ms=1.0),
        slo=Slo(p95_ms=500.0, error_rate=0.01),
        ramp=RampSpec(
            strategy="adaptive",
            start_users=50,
            step_users=50,
            max_users=700,
            step_seconds=8.0,
            resolution=0.05,
        ),
        gate=GateSpec(min_users=250, max_regression=0.10, block_min_regression=0.05),
        noise=NOISE_PROFILES["shared"],
    ),
    # The research note's prototype target: 8 servers × 40 ms lognormal (CV 1), p95 ≤ 400 ms.
    "research": Preset(
        name="research",
        model=TargetModel(servers=8, service_ms=40.0, service_cv=1.0, network_ms=5.0),
        slo=Slo(p95_ms=400.0, error_rate=0.01),
        ramp=RampSpec(
            strategy="adaptive",
            start_users=10,
            step_users=10,
            max_users=1000,
            step_seconds=10.0,
            resolution=0.05,
            min_samples=2000,
        ),
        gate=GateSpec(min_users=None, max_regression=0.10, block_min_regression=0.05),
        noise=NOISE_PROFILES["shared"],
    ),
}


class _Synced:
    """A deployment's runner that first idles up to the trial's global clock."""

    def __init__(self, sides: SimSides, runner: SimulatedRunner) -> None:
        self.sides, self.inner = sides, runner

    def _catch_up(self) -> None:
        lag = self.sides.clock - self.inner.clock_s
        if lag > 0:
            self.inner.hold(0, lag)

    def measure(self, users: int, **kw: Any) -> StepStats:
        self._catch_up()
        out = self.inner.measure(users, **kw)
        self.sides.clock = self.inner.clock_s
        return out

    def hold(self, users: int, seconds: float) -> None:
        self._catch_up()
        self.inner.hold(users, seconds)
        self.sides.clock = self.inner.clock_s


class SimSides:
    """The gate's :class:`~perfgate.gate.Sides` on one simulated machine.

    Two deployments ("places") share the machine's :class:`Timeline`; the candidate starts on the
    first, with the profile's ``candidate_offset``. A swap redeploys each build on the other's
    place: offsets and drift stay with the place (a node), warm-up starts again.
    """

    def __init__(
        self,
        preset: Preset,
        ramp: RampSpec,
        noise: NoiseProfile,
        rng: random.Random,
        regression: float,
        *,
        start_s: float = 0.0,
        timeline: Timeline | None = None,
        staging: str = "embedded",
        swap_s: float | None = None,
    ) -> None:
        self.preset, self.ramp, self.noise, self.rng = preset, ramp, noise, rng
        self.regression = regression
        self.crossover, default_swap_s, self.renews = STAGINGS[staging]
        self.swap_s = default_swap_s if swap_s is None else swap_s
        self.clock = start_s
        self.started = start_s
        self.timeline = timeline or Timeline(noise, random.Random(rng.getrandbits(63)))
        self.places = [
            Deployment(
                noise,
                random.Random(rng.getrandbits(63)),
                started_s=start_s,
                offset=noise.candidate_offset,
            ),
            Deployment(noise, random.Random(rng.getrandbits(63)), started_s=start_s),
        ]
        self.where: dict[str, int] = {"candidate": 0, "baseline": 1}
        self.runners: dict[str, _Synced] = {}

    def runner(self, build: Build) -> _Synced:
        if build not in self.runners:
            inner = SimulatedRunner(
                self.preset.model,
                self.preset.slo,
                seed=self.rng.getrandbits(63),
                regression=self.regression if build == "candidate" else 0.0,
                noise=self.noise,
                timeline=self.timeline,
                deployment=self.places[self.where[build]],
                start_s=self.clock,
            )
            self.runners[build] = _Synced(self, inner)
        return self.runners[build]

    def idle(self, build: Build) -> None:
        self.runner(build).hold(0, 0.0)
        self.clock += SWITCH_S

    def measure_together(
        self, users: int, *, settle_s: float, window_s: float
    ) -> tuple[StepStats, StepStats]:
        """Both builds over the same stretch of the global clock (they share the machine)."""
        start = self.clock
        got = []
        for build in ("candidate", "baseline"):
            self.clock = start
            got.append(
                measure_window(self.runner(build), users, settle_s=settle_s, window_s=window_s)
            )
        for build in ("candidate", "baseline"):
            self.runner(build).inner.hold(0, 0.0)  # type: ignore[arg-type]
        self.clock += SWITCH_S
        return got[0], got[1]

    def can_swap(self) -> bool:
        return self.crossover

    def swap(self) -> None:
        self.where = {"candidate": self.where["baseline"], "baseline": self.where["candidate"]}
        if self.renews:  # new pods, anywhere: offsets of their own (no candidate_offset again)
            self.places = [
                Deployment(
                    self.noise, random.Random(self.rng.getrandbits(63)), started_s=self.clock
                )
                for _ in self.places
            ]
        else:
            self.places = [p.redeployed(self.clock) for p in self.places]
        self.runners.clear()
        self.clock += self.swap_s

    def swap_cost_s(self) -> float:
        return self.swap_s

    def swap_renews_placement(self) -> bool:
        return self.renews

    def elapsed_s(self) -> float:
        return self.clock - self.started


def _hint_ref(preset: Preset) -> BaselineRef:
    """What a stored baseline of the previous release says (its bracket guides the search)."""
    n_star = preset.model.analytical_n_star(preset.slo.p95_ms)
    sat = Saturation(
        users=n_star,
        throughput_rps=preset.model.capacity_rps,
        broken=True,
        reason="the previous release's stored saturation point",
        bracket=(math.floor(n_star * 0.95), math.ceil(n_star * 1.05)),
    )
    return BaselineRef(release="previous", saturation=sat)


def _stored_session(
    preset: Preset, ramp: RampSpec, noise: NoiseProfile, rng: random.Random
) -> tuple[BaselineRef, tuple[Any, ...]]:
    """The previous release's own gate in an earlier session: what its promotion stored."""
    sides = SimSides(preset, ramp, noise, rng, 0.0)
    inputs = GateInputs(
        slo=preset.slo,
        ramp=ramp,
        gate=preset.gate,
        mode="side-by-side",
        baseline=_hint_ref(preset),
        seed=rng.getrandbits(32),
    )
    out = gate.run_gate(_SelfSides(sides), inputs)
    ref = BaselineRef(release="previous", saturation=out.saturation)
    return ref, out.windows


class _SelfSides:
    """An A/A session of one build (how a stored baseline got its windows)."""

    def __init__(self, sides: SimSides) -> None:
        self.sides = sides

    def runner(self, build: Build) -> _Synced:
        return self.sides.runner("candidate")

    def idle(self, build: Build) -> None:
        self.sides.idle("candidate")

    def measure_together(
        self, users: int, *, settle_s: float, window_s: float
    ) -> tuple[StepStats, StepStats]:
        a = self.runner("candidate").measure(
            users, settle_s=settle_s, min_s=window_s, max_s=window_s, min_samples=0, phase="w"
        )
        return a, a

    def can_swap(self) -> bool:
        return False

    def swap(self) -> None:  # pragma: no cover - never called (can_swap is False)
        raise NotImplementedError

    def swap_cost_s(self) -> float:
        return 0.0

    def swap_renews_placement(self) -> bool:
        return False

    def elapsed_s(self) -> float:
        return self.sides.elapsed_s()


@dataclass(**_FROZEN)
class Trial:
    verdict: str
    ratio: float | None
    gate_s: float
    looks: int
    windows: int
    users_ci: tuple[float, float] | None = None  # the floor rule's interval (saturation.users_ci)


@dataclass(**_FROZEN)
class Config:
    preset: Preset
    ramp: RampSpec
    noise: NoiseProfile
    regression: float
    seed: int
    mode: Mode
    repeat: int
    calibrated: bool
    interleave: str = "simultaneous"
    staging: str = "embedded"  # how the two deployments swap (STAGINGS)
    swap_s: float | None = None  # seconds a swap costs; None: the provider's typical cost


def _calibrate(cfg: Config, rng: random.Random) -> Any:
    """`perfgate calibrate`: A/A side-by-side runs of the previous release, some time ago, each
    on two fresh deployments (the gate's own procedure, no cross-over)."""
    from perfgate.calibration import estimate_side_by_side
    from perfgate.gate.calibrate import aa_run

    done = []
    for _ in range(cfg.preset.calibration_runs):
        sides = SimSides(cfg.preset, cfg.ramp, cfg.noise, rng, 0.0)
        inputs = GateInputs(
            slo=cfg.preset.slo,
            ramp=cfg.ramp,
            gate=cfg.preset.gate,
            mode="side-by-side",
            seed=rng.getrandbits(32),
        )
        done.append(aa_run(sides, inputs))
    try:
        return estimate_side_by_side(done, scenario=cfg.preset.name)
    except ValueError:
        return None


def trial(cfg: Config, index: int) -> Trial:
    """One whole simulated gate."""
    rng = random.Random(f"perfgate-simulate:{cfg.seed}:{index}")
    noise_model = _calibrate(cfg, rng) if cfg.calibrated else None
    baseline, windows = _hint_ref(cfg.preset), ()
    if cfg.mode == "stored":
        baseline, windows = _stored_session(cfg.preset, cfg.ramp, cfg.noise, rng)
    sides = SimSides(
        cfg.preset,
        cfg.ramp,
        cfg.noise,
        rng,
        cfg.regression,
        staging=cfg.staging,
        swap_s=cfg.swap_s,
    )
    inputs = GateInputs(
        slo=cfg.preset.slo,
        ramp=cfg.ramp,
        gate=dataclasses.replace(cfg.preset.gate, min_users=None),  # the regression rule alone
        mode=cfg.mode,
        baseline=baseline,
        baseline_windows=windows,
        baseline_replicates=(baseline.saturation,) if cfg.mode == "stored" else (),
        priors=gate.priors(noise_model),
        repeat=cfg.repeat,
        seed=rng.getrandbits(32),
        interleave=cfg.interleave,  # type: ignore[arg-type]
    )
    out = gate.run_gate(sides, inputs)
    return Trial(
        verdict=out.result.verdict,
        ratio=out.result.ratio,
        gate_s=sides.elapsed_s(),
        looks=len(out.looks),
        windows=len(out.windows),
        users_ci=out.floor_interval,
    )


def _batch(args: tuple[Config, list[int]]) -> list[Trial]:
    cfg, indexes = args
    return [trial(cfg, i) for i in indexes]


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for a proportion."""
    from scipy import stats

    if trials <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lo = (
        0.0
        if successes == 0
        else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    )
    hi = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    )
    return lo, hi


def _run_trials(cfg: Config, trials: int, workers: int) -> list[Trial]:
    indexes = list(range(trials))
    if workers <= 1 or trials < 8:
        return _batch((cfg, indexes))
    import concurrent.futures
    import multiprocessing

    chunks = [indexes[i :: workers * 4] for i in range(workers * 4)]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        parts = pool.map(_batch, [(cfg, chunk) for chunk in chunks if chunk])
        return [t for part in parts for t in part]


def _config(
    regression: float,
    seed: int,
    *,
    mode: str,
    repeat: int,
    calibrated: bool,
    preset: str,
    noise: str | None,
    strategy: str | None,
    interleave: str = "simultaneous",
    staging: str = "embedded",
    swap_s: float | None = None,
) -> Config:
    if not 0.0 <= regression < 1.0:
        raise ValueError(f"regression must be in [0, 1), got {regression}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
    if noise is not None and noise not in NOISE_PROFILES:
        raise ValueError(f"unknown noise profile {noise!r} (one of {', '.join(NOISE_PROFILES)})")
    if mode not in ("side-by-side", "stored"):
        raise ValueError(f"unknown mode {mode!r} (side-by-side or stored)")
    if strategy not in (None, "adaptive", "linear"):
        raise ValueError(f"unknown strategy {strategy!r} (adaptive or linear)")
    if repeat < 1:
        raise ValueError(f"repeat must be ≥ 1, got {repeat}")
    if staging not in STAGINGS:
        raise ValueError(f"unknown staging {staging!r} (one of {', '.join(STAGINGS)})")
    if swap_s is not None and not 0.0 <= swap_s <= 3600.0:
        raise ValueError(f"swap seconds must be in [0, 3600], got {swap_s}")
    if interleave not in ("simultaneous", "alternate"):
        raise ValueError(f"unknown interleave {interleave!r} (simultaneous or alternate)")
    pre = PRESETS[preset]
    ramp = pre.ramp if strategy is None else dataclasses.replace(pre.ramp, strategy=strategy)  # type: ignore[arg-type]
    return Config(
        preset=pre,
        ramp=ramp,
        noise=pre.noise if noise is None else NOISE_PROFILES[noise],
        regression=regression,
        seed=seed,
        mode=mode,  # type: ignore[arg-type]
        repeat=repeat,
        calibrated=calibrated,
        interleave=interleave,
        staging=staging,
        swap_s=swap_s,
    )


def simulate(
    regression: float,
    trials: int,
    seed: int,
    *,
    mode: str = "side-by-side",
    repeat: int = 1,
    calibrated: bool = False,
    preset: str = "exchange",
    noise: str | None = None,
    strategy: str | None = None,
    interleave: str = "simultaneous",
    crossover: bool = True,
    staging: str = "embedded",
    swap_s: float | None = None,
    workers: int = 1,
    coverage: bool = False,
) -> dict[str, Any]:
    """Run ``trials`` whole gates for a candidate with a capacity loss of ``regression``.

    With no options this is what ``perfgate run`` does by default on the default scenario:
    side by side, alternating windows, sequential looks, shared-machine noise. ``staging`` is how
    the two deployments can swap (``STAGINGS``); ``crossover=False`` is ``staging="target"``.
    ``coverage`` adds ``floor_interval``: how often the floor rule's users interval covers the
    candidate's true users at the SLO (:func:`true_users`, a minute or more of CPU). Returns the
    verdict fractions with 95 % Clopper–Pearson intervals and the simulated load time per gate.
    """
    if trials < 1:
        raise ValueError(f"trials must be ≥ 1, got {trials}")
    cfg = _config(
        regression,
        seed,
        mode=mode,
        repeat=repeat,
        calibrated=calibrated,
        preset=preset,
        noise=noise,
        strategy=strategy,
        interleave=interleave,
        staging=staging if crossover else "target",
        swap_s=swap_s,
    )
    started = time.perf_counter()
    results = _run_trials(cfg, trials, workers)
    out = _summary(cfg, results, round(time.perf_counter() - started, 2))
    if coverage:
        out["floor_interval"] = _floor_interval(cfg, results)
    return out


@functools.lru_cache(maxsize=64)
def true_users(preset: Preset, regression: float, noise: NoiseProfile) -> float:
    """The candidate's users at the SLO in this environment: what the floor interval is about.

    The SLO is judged per step, so the truth is the level at which the *median step's* p95 is
    the SLO, under the same noise (stalls, neighbours, throttling: what slows a step), over many
    steps of the scenario's length on several deployments. Past the knee the crossing scales with
    capacity, so the capacity's zero-mean log shifts (offsets, drift, steps) average out of it:
    they are left out here, which makes a few deployments enough for a precise value; past the
    knee p95 grows in proportion to the users, so ``N · L / p95`` is the crossing.
    """
    rng = random.Random(f"perfgate-true-users:{preset.name}:{regression}:{noise.name}")
    noise = dataclasses.replace(
        noise, drift_sd=0.0, step_sd=0.0, deploy_sd=0.0, candidate_offset=0.0, proc_drift_sd=0.0
    )
    step_s, settle_s = preset.ramp.step_seconds, preset.ramp.settle_s
    logs = []
    for _ in range(TRUTH_DEPLOYMENTS):
        runner = SimulatedRunner(
            preset.model, preset.slo, seed=rng.getrandbits(63), regression=regression, noise=noise
        )
        users = preset.model.analytical_n_star(preset.slo.p95_ms) * (1.0 - regression)
        for _ in range(2):
            n = max(1, round(users))
            p95 = [
                runner.measure(
                    n, settle_s=settle_s, min_s=step_s, max_s=step_s, min_samples=0, phase="t"
                ).p95_ms
                or math.inf
                for _ in range(TRUTH_STEPS)
            ]
            users = n * preset.slo.p95_ms / statistics.median(p95)
        logs.append(math.log(users))
    return math.exp(statistics.fmean(logs))


def _floor_interval(cfg: Config, results: list[Trial]) -> dict[str, Any]:
    """How often the floor rule's users interval covers the noise-free truth (docs/verdict.md)."""
    cis = [t.users_ci for t in results if t.users_ci is not None]
    if not cis:
        return {"trials": 0}
    truth = true_users(cfg.preset, cfg.regression, cfg.noise)
    covered = sum(1 for lo, hi in cis if lo <= truth <= hi)
    half = sorted((math.log(hi) - math.log(lo)) / 2 for lo, hi in cis)
    return {
        "trials": len(cis),
        "true_users": round(truth, 1),
        "coverage": covered / len(cis),
        "coverage_ci": list(clopper_pearson(covered, len(cis))),
        "median_half_width": math.expm1(half[len(half) // 2]),
    }


def _summary(cfg: Config, results: list[Trial], wall_s: float) -> dict[str, Any]:
    n = len(results)
    counts = {
        v: sum(1 for t in results if t.verdict == v) for v in ("block", "pass", "inconclusive")
    }
    seconds = sorted(t.gate_s for t in results)
    looks: dict[str, int] = {}
    for t in results:
        looks[str(t.looks)] = looks.get(str(t.looks), 0) + 1
    ratios = [math.log(t.ratio) for t in results if t.ratio]
    return {
        "trials": n,
        "regression": cfg.regression,
        **{v: counts[v] / n for v in counts},
        **{f"{v}_ci": list(clopper_pearson(counts[v], n)) for v in counts},
        "seed": cfg.seed,
        "mean_simulated_seconds": statistics.fmean(seconds),
        "p90_simulated_seconds": seconds[min(n - 1, math.ceil(0.9 * n) - 1)],
        "max_simulated_seconds": seconds[-1],
        "mean_windows": statistics.fmean(t.windows for t in results),
        "stopped_at_look": dict(sorted(looks.items())),
        "mean_log_ratio": statistics.fmean(ratios) if ratios else None,
        "sd_log_ratio": statistics.stdev(ratios) if len(ratios) > 1 else None,
        "mode": cfg.mode,
        "interleave": cfg.interleave,
        "crossover": STAGINGS[cfg.staging][0],
        "staging": cfg.staging,
        "swap_seconds": cfg.swap_s if cfg.swap_s is not None else STAGINGS[cfg.staging][1],
        "repeat": cfg.repeat,
        "calibrated": cfg.calibrated,
        "strategy": cfg.ramp.strategy,
        "preset": cfg.preset.name,
        "noise": dataclasses.asdict(cfg.noise),
        "model": {
            **dataclasses.asdict(cfg.preset.model),
            "capacity_rps": cfg.preset.model.capacity_rps,
        },
        "slo": dataclasses.asdict(cfg.preset.slo),
        "gate": dataclasses.asdict(cfg.preset.gate),
        "ramp": dataclasses.asdict(cfg.ramp),
        "perfgate_version": __version__,
        "wall_seconds": wall_s,
    }


def simulate_table(
    trials: int,
    seed: int,
    *,
    regressions: tuple[float, ...] = (0.0, 0.025, 0.05, 0.075, 0.10, 0.15, 0.20),
    **options: Any,
) -> dict[str, Any]:
    """:func:`simulate` for each regression size (the operating-characteristic curve)."""
    rows = [simulate(r, trials, seed + i, **options) for i, r in enumerate(regressions)]
    keep = (
        "regression",
        "trials",
        "block",
        "block_ci",
        "pass",
        "pass_ci",
        "inconclusive",
        "inconclusive_ci",
        "mean_simulated_seconds",
        "p90_simulated_seconds",
        "seed",
    )
    return {
        "rows": [{k: row[k] for k in keep} for row in rows],
        "config": {k: v for k, v in rows[0].items() if k not in keep and k != "wall_seconds"},
        "wall_seconds": round(sum(r["wall_seconds"] for r in rows), 2),
    }
