"""The simulated environment's noise: one machine over time, and the deployments on it.

Everything is a function of the **global clock** of one simulated gate (seconds), so two
deployments measured one after the other see the same machine: a noisy-neighbour episode or a
drift in capacity hits whichever build is being measured at that moment, as on a real machine.

Machine (:class:`Timeline`, shared by every deployment of a trial):

* slow drift of capacity: an Ornstein–Uhlenbeck process of log capacity (SD ``drift_sd``,
  correlation time ``drift_tau_s``), piecewise constant per second;
* step changes (held-out): at Poisson times (``step_per_s``) log capacity jumps by
  N(0, ``step_sd``) and stays;
* noisy neighbours: non-overlapping Poisson episodes (``neighbour_per_s``, exponential length
  ``neighbour_mean_s``) during which service takes ``neighbour_slowdown`` times longer; with
  ``neighbour_tail`` > 0 (held-out) each episode's extra slowdown is Pareto-distributed with that
  shape (heavy tails, capped at ×20);
* stop-the-world stalls (``stall_per_s``, each ``stall_s`` long).

Deployment (:class:`Deployment`, one per staged copy of a build):

* a capacity offset drawn when deployed, N(0, ``deploy_sd``) on the log scale, plus
  ``candidate_offset`` for the candidate's first deployment (held-out: a fixed difference);
* its own drift (held-out ``proc_drift_sd``/``proc_drift_tau_s``) and its own noisy-neighbour
  episodes (held-out ``proc_episode_*``: what a node's neighbours do to one pod, not the other);
* load-dependent freezes (held-out, CPU throttling): rate ``throttle_per_s`` × utilisation²,
  each ``throttle_s`` long;
* warm-up: service × ``1 + warmup_extra · exp(−age / warmup_tau_s)``.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}
GRID_S = 1.0  # drift is piecewise constant over this many seconds
TAIL_CAP = 20.0


@dataclass(**_FROZEN)
class NoiseProfile:
    """The environment's noise (see the module docstring); ``NOISE_PROFILES`` has named sets."""

    name: str = "custom"
    drift_sd: float = 0.0
    drift_tau_s: float = 300.0
    step_per_s: float = 0.0
    step_sd: float = 0.0
    neighbour_per_s: float = 0.0
    neighbour_mean_s: float = 2.0
    neighbour_slowdown: float = 1.5
    neighbour_tail: float = 0.0
    stall_per_s: float = 0.0
    stall_s: float = 0.15
    deploy_sd: float = 0.0
    candidate_offset: float = 0.0
    proc_drift_sd: float = 0.0
    proc_drift_tau_s: float = 120.0
    proc_episode_per_s: float = 0.0  # episodes of one deployment's own (not the machine's)
    proc_episode_mean_s: float = 2.0
    proc_episode_slowdown: float = 1.5
    throttle_per_s: float = 0.0
    throttle_s: float = 0.1
    warmup_extra: float = 0.0
    warmup_tau_s: float = 5.0
    generator_ms: float | None = None  # the load generator's CPU per request (None: the model's)


_SHARED = {
    "drift_sd": 0.04,
    "drift_tau_s": 300.0,
    "deploy_sd": 0.02,
    "neighbour_per_s": 1 / 20,
    "neighbour_mean_s": 2.0,
    "neighbour_slowdown": 1.5,
    "stall_per_s": 1 / 30,
    "stall_s": 0.15,
    "warmup_extra": 0.5,
    "warmup_tau_s": 5.0,
}

NOISE_PROFILES: dict[str, NoiseProfile] = {
    "none": NoiseProfile(name="none"),
    # A quiet dedicated machine: small drift, rare hiccups.
    "quiet": NoiseProfile(
        name="quiet",
        drift_sd=0.01,
        deploy_sd=0.01,
        neighbour_per_s=1 / 120,
        neighbour_mean_s=1.0,
        neighbour_slowdown=1.2,
        stall_per_s=1 / 120,
        stall_s=0.05,
        warmup_extra=0.3,
    ),
    # A shared CI machine (the research note's model). The gate's defaults were chosen on it.
    "shared": NoiseProfile(name="shared", **_SHARED),
    # Held out: the method was not tuned on these (docs/verdict.md publishes each); each is
    # the shared profile plus one thing.
    **{
        name: NoiseProfile(name=name, **{**_SHARED, **changes})
        for name, changes in (
            ("heavy-tail", {"neighbour_tail": 1.5, "stall_s": 0.3}),
            ("step-change", {"step_per_s": 1 / 300, "step_sd": 0.05}),
            ("throttled", {"throttle_per_s": 2.0, "throttle_s": 0.1}),
            ("deploy-offset", {"candidate_offset": math.log(0.95)}),
            ("proc-drift", {"proc_drift_sd": 0.03, "proc_drift_tau_s": 120.0}),
            ("generator-cost", {"generator_ms": 0.4}),
            ("process-episodes", {"proc_episode_per_s": 1 / 20, "proc_episode_mean_s": 2.0}),
        )
    },
}
HELD_OUT = (
    "process-episodes",
    "heavy-tail",
    "step-change",
    "throttled",
    "deploy-offset",
    "proc-drift",
    "generator-cost",
)


class _OU:
    """An Ornstein–Uhlenbeck path on a 1-s grid, extended on demand (exact discretisation)."""

    def __init__(self, sd: float, tau_s: float, rng: random.Random) -> None:
        self.sd = sd
        self.keep = math.exp(-GRID_S / tau_s) if tau_s > 0 else 0.0
        self.kick = sd * math.sqrt(1 - self.keep * self.keep)
        self.rng = rng
        self.values = [rng.gauss(0.0, sd) if sd > 0 else 0.0]

    def at(self, t: float) -> float:
        if self.sd <= 0:
            return 0.0
        k = max(0, int(t // GRID_S))
        values = self.values
        while len(values) <= k:
            values.append(values[-1] * self.keep + self.rng.gauss(0.0, self.kick))
        return values[k]


class Timeline:
    """The machine's noise over the global clock (shared by the deployments of one trial)."""

    def __init__(self, noise: NoiseProfile, rng: random.Random) -> None:
        self.noise = noise
        self.rng = rng
        self.drift = _OU(noise.drift_sd, noise.drift_tau_s, rng)
        self.ep_start: list[float] = []
        self.ep_end: list[float] = []
        self.ep_factor: list[float] = []
        self.stalls: list[float] = []
        self.step_t: list[float] = []
        self.step_level: list[float] = [0.0]  # cumulative log change after each step
        self._until = 0.0

    def extend(self, until: float) -> None:
        """Draw episodes, stalls and steps up to ``until`` + a minute."""
        n, rng = self.noise, self.rng
        horizon = until + 60.0
        if horizon <= self._until:
            return
        if n.neighbour_per_s > 0:
            t = self.ep_end[-1] if self.ep_end else 0.0
            while t < horizon:
                start = t + rng.expovariate(n.neighbour_per_s)
                end = start + rng.expovariate(1.0 / n.neighbour_mean_s)
                extra = n.neighbour_slowdown - 1.0
                if n.neighbour_tail > 0:
                    extra *= (rng.paretovariate(n.neighbour_tail) - 1.0) * (n.neighbour_tail - 1)
                self.ep_start.append(start)
                self.ep_end.append(end)
                self.ep_factor.append(min(TAIL_CAP, 1.0 + extra))
                t = end
        if n.stall_per_s > 0:
            t = self.stalls[-1] if self.stalls else 0.0
            while t < horizon:
                t += rng.expovariate(n.stall_per_s)
                self.stalls.append(t)
        if n.step_per_s > 0:
            t = self.step_t[-1] if self.step_t else 0.0
            while t < horizon:
                t += rng.expovariate(n.step_per_s)
                self.step_t.append(t)
                self.step_level.append(self.step_level[-1] + rng.gauss(0.0, n.step_sd))
        self._until = horizon

    def factor(self, t: float) -> tuple[float, float]:
        """Service-time multiplier at global ``t`` and until when it holds."""
        until = (math.floor(t / GRID_S) + 1) * GRID_S if self.noise.drift_sd > 0 else math.inf
        log_capacity = self.drift.at(t)
        if self.step_t:
            i = bisect.bisect_right(self.step_t, t)
            log_capacity += self.step_level[i]
            if i < len(self.step_t):
                until = min(until, self.step_t[i])
        mult = math.exp(-log_capacity)
        if self.ep_start:
            i = bisect.bisect_right(self.ep_start, t) - 1
            if i >= 0 and t < self.ep_end[i]:
                mult *= self.ep_factor[i]
                until = min(until, self.ep_end[i])
            elif i + 1 < len(self.ep_start):
                until = min(until, self.ep_start[i + 1])
        return mult, until


class Deployment:
    """One staged copy of a build: its own offset, drift, throttling and warm-up."""

    def __init__(
        self, noise: NoiseProfile, rng: random.Random, *, started_s: float, offset: float = 0.0
    ) -> None:
        self.noise = noise
        self.started_s = started_s
        drawn = rng.gauss(0.0, noise.deploy_sd) if noise.deploy_sd > 0 else 0.0
        self.log_offset = drawn + offset
        self.drift = _OU(noise.proc_drift_sd, noise.proc_drift_tau_s, rng)
        self.rng = rng
        own = NoiseProfile(
            neighbour_per_s=noise.proc_episode_per_s,
            neighbour_mean_s=noise.proc_episode_mean_s,
            neighbour_slowdown=noise.proc_episode_slowdown,
        )
        self.episodes = Timeline(own, rng) if noise.proc_episode_per_s > 0 else None

    def redeployed(self, started_s: float) -> Deployment:
        """The same place (offset, drift) with a fresh process: warm-up starts again."""
        again = Deployment.__new__(Deployment)
        again.noise, again.rng, again.drift = self.noise, self.rng, self.drift
        again.episodes = self.episodes
        again.log_offset, again.started_s = self.log_offset, started_s
        return again

    def factor(self, t: float) -> tuple[float, float]:
        """Service-time multiplier at global ``t`` (without warm-up) and until when it holds."""
        log_capacity = self.log_offset + self.drift.at(t)
        until = (math.floor(t / GRID_S) + 1) * GRID_S if self.noise.proc_drift_sd > 0 else math.inf
        mult = math.exp(-log_capacity)
        if self.episodes is not None:
            self.episodes.extend(t)
            own, own_until = self.episodes.factor(t)
            mult, until = mult * own, min(until, own_until)
        return mult, until

    def warmup(self, t: float) -> float:
        n = self.noise
        age = t - self.started_s
        if n.warmup_extra <= 0 or age >= 10 * n.warmup_tau_s:
            return 1.0
        return 1.0 + n.warmup_extra * math.exp(-max(0.0, age) / n.warmup_tau_s)

    def throttled(self, utilisation: float, seconds: float) -> bool:
        """Whether a throttling freeze starts in the next ``seconds`` at this utilisation."""
        rate = self.noise.throttle_per_s * utilisation * utilisation
        return rate > 0 and self.rng.random() < 1 - math.exp(-rate * seconds)
