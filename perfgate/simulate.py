"""A simulated system under test and the harness that measures how often the gate is wrong.

The target is a discrete-event **closed queueing network** (pure Python, ``heapq``): ``N`` virtual
users with zero think time each send a request, which travels ``network_ms`` to a FCFS station of
``servers`` identical servers, is served for a random service time, and travels ``network_ms``
back; the user sends its next request at once. With deterministic service the ground truth is
analytical: capacity ``X_max = servers / service`` and, past the knee, latency ``= N / X_max`` so a
p95 SLO of ``L`` breaks at ``N* = L · servers / service`` users (the reference exchange's formula).

Noise model (``NoiseProfile``; every parameter is printed with the harness results):

* run-to-run capacity: each run's service times are divided by ``exp(z + e)``: ``z`` follows an
  AR(1) process over successive runs in one environment (sd ``drift_sd``, lag-1 correlation
  ``drift_rho``), ``e`` is independent per run (sd ``run_sd``);
* noisy neighbours: Poisson episodes (``neighbour_per_s``), exponential length (mean
  ``neighbour_mean_s``), service times × ``neighbour_slowdown`` while one lasts;
* stop-the-world stalls: Poisson (``stall_per_s``), each freezing the servers for ``stall_s``;
* warm-up: service times × ``1 + warmup_extra · exp(-t / warmup_tau_s)`` after each (re)start.

:class:`SimulatedRunner` implements the ``StepRunner`` protocol (``measure``/``hold``) and returns
``StepStats`` built exactly as real runs build them (percentiles and their CI from
``perfgate.histogram.Histogram``), so :func:`simulate` drives the same search, analysis and
verdict code as ``perfgate run``. Simulated time is counted in ``clock_s``.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
import math
import random
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from perfgate._version import __version__
from perfgate.histogram import Histogram
from perfgate.models import (
    BaselineRef,
    GateSpec,
    GeneratorHealth,
    RampSpec,
    Saturation,
    Slo,
    StepStats,
)
from perfgate.steps import slo_check

# ---------------------------------------------------------------------------------------------
# The target and its noise
# ---------------------------------------------------------------------------------------------

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


@dataclass(**_FROZEN)
class TargetModel:
    """A closed queueing target: FCFS station with ``servers`` servers behind a network delay."""

    servers: int = 8
    service_ms: float = 40.0  # mean service time of one request at full capacity
    service_cv: float = 1.0  # coefficient of variation (lognormal); 0 = deterministic
    service_dist: Literal["lognormal", "exponential"] = "lognormal"  # exponential: CV is 1
    network_ms: float = 5.0  # one way
    generator_ms: float = 0.0  # client CPU per request on one generator core (0 = unlimited)
    timeout_ms: float | None = None  # responses slower than this count as failures

    @property
    def capacity_rps(self) -> float:
        """Bottleneck throughput without noise: servers / mean service time."""
        return self.servers / (self.service_ms / 1000.0)

    def analytical_n_star(self, p95_ms: float) -> float:
        """Users at which p95 = ``p95_ms`` past the knee for deterministic service (N = X·R)."""
        return p95_ms / 1000.0 * self.capacity_rps


@dataclass(**_FROZEN)
class NoiseProfile:
    """The environment's noise (see the module docstring); ``NOISE_PROFILES`` has named sets."""

    name: str = "custom"
    drift_sd: float = 0.0
    drift_rho: float = 0.7
    run_sd: float = 0.0
    neighbour_per_s: float = 0.0
    neighbour_mean_s: float = 2.0
    neighbour_slowdown: float = 1.5
    stall_per_s: float = 0.0
    stall_s: float = 0.15
    warmup_extra: float = 0.0
    warmup_tau_s: float = 5.0


NOISE_PROFILES: dict[str, NoiseProfile] = {
    "none": NoiseProfile(name="none"),
    # A quiet dedicated machine: small drift, rare hiccups.
    "quiet": NoiseProfile(
        name="quiet",
        drift_sd=0.01,
        run_sd=0.01,
        neighbour_per_s=1 / 120,
        neighbour_mean_s=1.0,
        neighbour_slowdown=1.2,
        stall_per_s=1 / 120,
        stall_s=0.05,
        warmup_extra=0.3,
    ),
    # A shared CI machine (the research note's model): the default for published figures.
    "shared": NoiseProfile(
        name="shared",
        drift_sd=0.04,
        drift_rho=0.7,
        run_sd=0.02,
        neighbour_per_s=1 / 20,
        neighbour_mean_s=2.0,
        neighbour_slowdown=1.5,
        stall_per_s=1 / 30,
        stall_s=0.15,
        warmup_extra=0.5,
        warmup_tau_s=5.0,
    ),
}


class Environment:
    """One machine over time: successive runs draw their capacity factor from the AR(1) drift."""

    def __init__(self, noise: NoiseProfile, rng: random.Random) -> None:
        self.noise = noise
        self.rng = rng
        sd = noise.drift_sd
        self._z = rng.gauss(0.0, sd) if sd > 0 else 0.0

    def next_factor(self, *, independent: bool = False) -> float:
        """Capacity factor of the next run; ``independent`` forgets the drift (a long gap)."""
        n = self.noise
        if n.drift_sd > 0:
            if independent:
                self._z = self.rng.gauss(0.0, n.drift_sd)
            else:
                innovation = n.drift_sd * math.sqrt(1.0 - n.drift_rho**2)
                self._z = n.drift_rho * self._z + self.rng.gauss(0.0, innovation)
        e = self.rng.gauss(0.0, n.run_sd) if n.run_sd > 0 else 0.0
        return math.exp(self._z + e)


# ---------------------------------------------------------------------------------------------
# The simulated StepRunner
# ---------------------------------------------------------------------------------------------

_ARRIVE = 0  # request reaches the station
_DEPART = 1  # service ends
_READY = 2  # a user wants to send (only with generator_ms > 0)
_GEN = 3  # the generator finished preparing a request


class SimulatedRunner:
    """A ``StepRunner`` over the closed queue: ``measure``/``hold`` advance a simulated clock."""

    def __init__(
        self,
        model: TargetModel,
        slo: Slo,
        *,
        seed: int,
        capacity_factor: float = 1.0,
        regression: float = 0.0,
        noise: NoiseProfile | None = None,
    ) -> None:
        if not 0.0 <= regression < 1.0:
            raise ValueError(f"regression must be in [0, 1), got {regression}")
        self.model = model
        self.slo = slo
        self.noise = noise or NOISE_PROFILES["none"]
        self.rng = random.Random(seed)
        # mean service in seconds after run-level capacity and the regression under test
        self._service_s = model.service_ms / 1000.0 / capacity_factor / (1.0 - regression)
        cv = 1.0 if model.service_dist == "exponential" else model.service_cv
        self._sigma = math.sqrt(math.log1p(cv * cv)) if cv > 0 else 0.0
        self._mu = math.log(self._service_s) - self._sigma**2 / 2 if cv > 0 else 0.0
        self._net_s = model.network_ms / 1000.0
        self._gen_s = model.generator_ms / 1000.0
        self._timeout_s = model.timeout_ms / 1000.0 if model.timeout_ms else math.inf
        self.clock_s = 0.0  # simulated seconds since the target started
        self._heap: list[tuple[float, int, int, int]] = []
        self._seq = itertools.count()
        self._np = np.random.default_rng(self.rng.getrandbits(63))
        self._draws: list[float] = []
        self._draw_i = 0
        n = self.noise
        self._noisy = n.warmup_extra > 0 or n.neighbour_per_s > 0
        self._slow_until = -1.0  # the cached slowdown factor holds until then
        self._slow_factor = 1.0
        self._stall_i = 0
        self._queue: deque[int] = deque()
        self._busy = 0
        self._gen_queue: deque[int] = deque()
        self._transit: deque[tuple[float, int]] = deque()  # (arrival at the station, user)
        self._gen_busy = False
        self._send: list[float] = []  # per user: when its request in flight was sent
        self._active: list[bool] = []  # per user: keeps looping after its current request
        self._in_flight: list[bool] = []
        self._users = 0
        self._done_t: list[float] = []  # completion times (client side)
        self._done_lat: list[float] = []  # latencies in s
        self._done_fail: list[bool] = []
        self._episodes: list[tuple[float, float]] = []  # noisy-neighbour (start, end), sorted
        self._episodes_until = 0.0
        self._ep_i = 0
        self._stalls: list[float] = []  # stall start times, sorted
        self._stalls_until = 0.0
        self._steps = 0

    # -- noise ---------------------------------------------------------------------------------

    def _extend_noise(self, until: float) -> None:
        n = self.noise
        horizon = until + 60.0
        if n.neighbour_per_s > 0 and self._episodes_until < horizon:
            t = self._episodes[-1][0] if self._episodes else 0.0
            while t < horizon:
                t += self.rng.expovariate(n.neighbour_per_s)
                self._episodes.append((t, t + self.rng.expovariate(1.0 / n.neighbour_mean_s)))
            self._episodes_until = t
        if n.stall_per_s > 0 and self._stalls_until < horizon:
            t = self._stalls[-1] if self._stalls else 0.0
            while t < horizon:
                t += self.rng.expovariate(n.stall_per_s)
                self._stalls.append(t)
            self._stalls_until = t

    def _slowdown(self, t: float) -> float:
        """Service-time multiplier at ``t`` (warm-up × noisy neighbour); ``t`` never decreases."""
        n = self.noise
        if t >= self._slow_until:
            eps = self._episodes
            i = self._ep_i
            while i < len(eps) and eps[i][1] <= t:
                i += 1
            self._ep_i = i
            inside = i < len(eps) and eps[i][0] <= t
            # piecewise constant until the current episode ends or the next one starts
            # (episodes may overlap; the slowdown does not compound)
            self._slow_until = eps[i][1] if inside else (eps[i][0] if i < len(eps) else math.inf)
            self._slow_factor = n.neighbour_slowdown if inside else 1.0
        factor = self._slow_factor
        if n.warmup_extra > 0 and t < 10 * n.warmup_tau_s:
            factor *= 1.0 + n.warmup_extra * math.exp(-t / n.warmup_tau_s)
        return factor

    def _service_end(self, t: float) -> float:
        """When a service that starts at ``t`` ends, including slowdowns and stalls."""
        if self._sigma > 0:
            i = self._draw_i
            if i >= len(self._draws):  # numpy draws in batches: 4× faster than random's
                if self.model.service_dist == "exponential":
                    draws = self._np.exponential(self._service_s, 16384)
                else:
                    draws = self._np.lognormal(self._mu, self._sigma, 16384)
                self._draws = draws.tolist()
                i = 0
            self._draw_i = i + 1
            s = self._draws[i]
        else:
            s = self._service_s
        if self._noisy:
            s *= self._slowdown(t)
        stalls = self._stalls
        if not stalls:
            return t + s
        length = self.noise.stall_s
        i = self._stall_i  # first stall that has not ended by t (service starts are monotone)
        while i < len(stalls) and stalls[i] + length <= t:
            i += 1
        self._stall_i = i
        if i < len(stalls) and stalls[i] <= t:  # starts inside a stall: wait for its end
            t = stalls[i] + length
            i += 1
        end = t + s
        while i < len(stalls) and stalls[i] < end:
            end += length
            i += 1
        return end

    # -- event loop ----------------------------------------------------------------------------

    def _push(self, t: float, kind: int, user: int) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, user))

    def _send_at(self, t: float, u: int) -> None:
        """User ``u`` sends a request at ``t`` (after the generator prepared it, if modelled)."""
        self._in_flight[u] = True
        if self._gen_s > 0:
            self._push(t, _READY, u)
            return
        self._send[u] = t
        arrive = t + self._net_s
        transit = self._transit
        if not transit or transit[-1][0] <= arrive:
            transit.append((arrive, u))
        else:  # rare (users added mid-flight): keep the transit line sorted by arrival
            i = len(transit)
            while i > 0 and transit[i - 1][0] > arrive:
                i -= 1
            transit.insert(i, (arrive, u))

    def _set_users(self, users: int) -> None:
        while len(self._send) < users:
            self._send.append(0.0)
            self._active.append(False)
            self._in_flight.append(False)
        for u in range(users):
            if not self._active[u]:
                self._active[u] = True
                if not self._in_flight[u]:
                    self._send_at(self.clock_s, u)
        for u in range(users, len(self._active)):
            self._active[u] = False  # finishes its request in flight, then stops
        self._users = users

    def _advance(self, until: float) -> None:
        self._extend_noise(until)
        if self._gen_s > 0:
            self._advance_events(until)
        else:
            self._advance_fast(until)
        self.clock_s = until

    def _advance_fast(self, until: float) -> None:
        """The event loop without a generator model.

        Every request spends the same network delay in transit, so requests reach the station
        in the order they were sent: a FIFO line (``_transit``) replaces heap events for
        arrivals, and the heap only holds the ≤ ``servers`` services in progress.
        """
        heap, queue, servers, transit = self._heap, self._queue, self.model.servers, self._transit
        net = self._net_s
        pop, heappush, seq = heapq.heappop, heapq.heappush, self._seq
        service_end = self._service_end
        done_t, done_lat, done_fail = self._done_t, self._done_lat, self._done_fail
        send, active, in_flight = self._send, self._active, self._in_flight
        timeout = self._timeout_s
        timed = timeout != math.inf
        busy = self._busy
        inf = math.inf
        while True:
            t_arrive = transit[0][0] if transit else inf
            t_depart = heap[0][0] if heap else inf
            if t_arrive <= t_depart:
                if t_arrive > until:
                    break
                _, u = transit.popleft()
                if busy < servers:
                    busy += 1
                    heappush(heap, (service_end(t_arrive), next(seq), _DEPART, u))
                else:
                    queue.append(u)
                continue
            if t_depart > until:
                break
            t, _, _, u = pop(heap)
            back = t + net
            latency = back - send[u]
            done_t.append(back)
            done_lat.append(latency)
            if timed:
                done_fail.append(latency > timeout)
            if active[u]:
                # the next request leaves when this response arrives (zero think time)
                send[u] = back
                transit.append((back + net, u))
            else:
                in_flight[u] = False
            if queue:
                heappush(heap, (service_end(t), next(seq), _DEPART, queue.popleft()))
            else:
                busy -= 1
        self._busy = busy

    def _advance_events(self, until: float) -> None:
        """The general event loop (with the generator modelled as one busy core)."""
        heap, queue, servers = self._heap, self._queue, self.model.servers
        net, gen_s = self._net_s, self._gen_s
        pop, heappush, seq = heapq.heappop, heapq.heappush, self._seq
        service_end = self._service_end
        done_t, done_lat, done_fail = self._done_t, self._done_lat, self._done_fail
        send, active, in_flight = self._send, self._active, self._in_flight
        timeout = self._timeout_s
        timed = timeout != math.inf
        busy = self._busy
        while heap and heap[0][0] <= until:
            t, _, kind, u = pop(heap)
            if kind == _ARRIVE:
                if busy < servers:
                    busy += 1
                    heappush(heap, (service_end(t), next(seq), _DEPART, u))
                else:
                    queue.append(u)
            elif kind == _DEPART:
                back = t + net
                latency = back - send[u]
                done_t.append(back)
                done_lat.append(latency)
                if timed:
                    done_fail.append(latency > timeout)
                if active[u]:
                    heappush(heap, (back, next(seq), _READY, u))
                else:
                    in_flight[u] = False
                if queue:
                    heappush(heap, (service_end(t), next(seq), _DEPART, queue.popleft()))
                else:
                    busy -= 1
            elif kind == _READY:  # the generator is one busy core: requests queue for it
                if self._gen_busy:
                    self._gen_queue.append(u)
                else:
                    self._gen_busy = True
                    heappush(heap, (t + gen_s, next(seq), _GEN, u))
            else:  # _GEN: the generator has prepared user u's request and sends it
                send[u] = t
                heappush(heap, (t + net, next(seq), _ARRIVE, u))
                if self._gen_queue:
                    heappush(heap, (t + gen_s, next(seq), _GEN, self._gen_queue.popleft()))
                else:
                    self._gen_busy = False
        self._busy = busy

    # -- StepRunner ----------------------------------------------------------------------------

    def hold(self, users: int, seconds: float) -> None:
        """Run at ``users`` for ``seconds`` without recording (warm-up, cool-down)."""
        self._set_users(users)
        self._advance(self.clock_s + max(0.0, seconds))

    def measure(
        self,
        users: int,
        *,
        settle_s: float,
        min_s: float,
        max_s: float,
        min_samples: int,
        phase: str,
    ) -> StepStats:
        """Set ``users``, discard ``settle_s``, then record until min time and samples (or max)."""
        self._set_users(users)
        self._advance(self.clock_s + settle_s)
        start = self.clock_s
        first = len(self._done_t)
        self._advance(start + min_s)
        while self.clock_s - start < max_s:
            n = bisect.bisect_right(self._done_t, self.clock_s, lo=first) - first
            if n >= min_samples:
                break
            self._advance(min(start + max_s, self.clock_s + 1.0))
        end = self.clock_s
        lo = bisect.bisect_left(self._done_t, start, lo=first)
        hi = bisect.bisect_right(self._done_t, end, lo=lo)
        return self._stats(users, start, end, lo, hi, phase)

    def _stats(
        self, users: int, start: float, end: float, lo: int, hi: int, phase: str
    ) -> StepStats:
        duration = end - start
        hist = Histogram()
        failures = 0
        timed = self._timeout_s != math.inf
        lat_sum = 0.0
        per_second = [0] * max(1, int(duration))
        for i in range(lo, hi):
            ms = self._done_lat[i] * 1000.0
            lat_sum += ms
            if timed and self._done_fail[i]:
                failures += 1
            else:
                hist.record(ms)
            k = int(self._done_t[i] - start)
            if k < len(per_second):
                per_second[k] += 1
        requests = hi - lo
        throughput = requests / duration if duration > 0 else 0.0
        error_rate = failures / requests if requests else 0.0
        mean_ms = lat_sum / requests if requests else None
        p95 = hist.percentile(95)
        slo_ok, reason = slo_check(p95, error_rate, requests - failures, self.slo)
        little = throughput * mean_ms / 1000.0 / users if mean_ms is not None and users else None
        limited = little is not None and little < 0.9
        median = statistics.median(per_second) if per_second else 0
        stalls = sum(1 for c in per_second if c < 0.5 * median) if median > 0 else 0
        self._steps += 1
        return StepStats(
            users=users,
            duration_s=duration,
            requests=requests,
            failures=failures,
            throughput_rps=throughput,
            p50_ms=hist.percentile(50),
            p95_ms=p95,
            p99_ms=hist.percentile(99),
            error_rate=error_rate,
            slo_ok=slo_ok,
            index=self._steps - 1,
            started_s=start,
            mean_ms=mean_ms,
            max_ms=hist.max if hist.count else None,
            p95_ci_ms=hist.percentile_ci(95) if hist.count else None,
            phase=phase,
            slo_reason=reason,
            generator=GeneratorHealth(
                cpu_percent=min(100.0, 100.0 * throughput * self._gen_s),
                loop_lag_ms=0.0,
                little_ratio=little,
                limited=limited,
                reason=f"Little's law: X·R/N = {little:.2f} < 0.9" if limited else "",
            ),
            histogram=hist.to_dict(),
            stalls=stalls,
        )


# ---------------------------------------------------------------------------------------------
# The harness: full gates through the real search, analysis and verdict code
# ---------------------------------------------------------------------------------------------


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
    # The default scenario (scenarios/exchange.yaml) on the reference exchange: 16 slots × 15.2 ms,
    # p95 ≤ 500 ms (N* ≈ 526), ramp from 50 users in 8 s steps up to 700; some service-time spread
    # stands for HTTP overhead; a shared machine.
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


def _strategy(name: str) -> Any:
    if name == "adaptive":
        from perfgate.adaptive import adaptive

        return adaptive
    from perfgate.search import linear

    return linear


@dataclass(**_FROZEN)
class _Run:
    saturation: Saturation
    steps: tuple[StepStats, ...]
    simulated_s: float


def _one_run(
    preset: Preset,
    ramp: RampSpec,
    rng: random.Random,
    factor: float,
    regression: float,
    noise: NoiseProfile,
    hint: tuple[int, int] | None = None,
) -> _Run:
    from perfgate.analysis import saturation

    runner = SimulatedRunner(
        preset.model,
        preset.slo,
        seed=rng.getrandbits(63),
        capacity_factor=factor,
        regression=regression,
        noise=noise,
    )
    if hint is not None and ramp.strategy == "adaptive":
        outcome = _strategy(ramp.strategy)(runner, ramp, preset.slo, hint=hint)
    else:
        outcome = _strategy(ramp.strategy)(runner, ramp, preset.slo)
    sat = saturation(outcome.steps, preset.slo, max_users=ramp.max_users)
    return _Run(saturation=sat, steps=outcome.steps, simulated_s=runner.clock_s)


@dataclass(**_FROZEN)
class _Trial:
    verdict: str
    ratio: float | None
    point_ratio: float | None
    runs: int
    gate_s: float
    calibration_s: float
    look: int


def _trial(
    preset: Preset,
    ramp: RampSpec,
    noise: NoiseProfile,
    regression: float,
    seed: int,
    index: int,
    repeat: int,
    paired: bool,
    calibrated: bool,
    default_prior: bool = False,
) -> _Trial:
    from perfgate.analysis import combine_replicates
    from perfgate.calibration import default_noise, estimate
    from perfgate.verdict import decide, plan_looks

    rng = random.Random(f"perfgate-simulate:{seed}:{index}")
    env = Environment(noise, rng)
    noise_model = None
    calibration_s = 0.0
    if calibrated:
        # `perfgate calibrate`: A/A runs of the baseline build, back to back, some time ago
        cal = []
        for i in range(preset.calibration_runs):
            run = _one_run(preset, ramp, rng, env.next_factor(independent=i == 0), 0.0, noise)
            cal.append(run.saturation)
            calibration_s += run.simulated_s
        try:
            noise_model = estimate(cal, scenario=preset.name)
        except ValueError:
            noise_model = None
    if noise_model is None and default_prior:
        noise_model = default_noise()
    looks = plan_looks(repeat)
    cand: list[_Run] = []
    base: list[_Run] = []
    gate_s = 0.0
    result = None
    look = 0
    if not paired:
        # the previous release's stored baseline: `repeat` runs, long before the candidate
        for i in range(repeat):
            factor = env.next_factor(independent=i == 0)
            base.append(_one_run(preset, ramp, rng, factor, 0.0, noise, _hint(base)))
    for i in range(1, max(looks) + 1):
        builds = ["candidate", "baseline"] if paired else ["candidate"]
        if paired:
            rng.shuffle(builds)  # randomised interleaving, as the pipeline does
        for build in builds:
            gap = i == 1 and build == builds[0]
            r = regression if build == "candidate" else 0.0
            runs = cand if build == "candidate" else base
            factor = env.next_factor(independent=gap)
            # both builds' replicates re-measure the same levels (see adaptive.replicate_hint)
            hint = _hint(cand, base) if paired or build == "candidate" else _hint(runs)
            run = _one_run(preset, ramp, rng, factor, r, noise, hint)
            gate_s += run.simulated_s
            runs.append(run)
        if i not in looks:
            continue
        look += 1
        c_sats = [r.saturation for r in cand]
        b_sats = [r.saturation for r in base]
        candidate = c_sats[0] if len(c_sats) == 1 else combine_replicates(c_sats)
        base_sat = b_sats[0] if len(b_sats) == 1 else combine_replicates(b_sats)
        result = decide(
            candidate,
            gate=GateSpec(
                min_users=None,
                max_regression=preset.gate.max_regression,
                block_min_regression=preset.gate.block_min_regression,
            ),
            baseline=BaselineRef(release="previous", saturation=base_sat),
            steps=tuple(s for r in cand for s in r.steps),
            replicates=tuple(c_sats) if len(c_sats) > 1 or paired else (),
            baseline_replicates=tuple(b_sats) if len(b_sats) > 1 or paired else (),
            noise=noise_model,
            paired=paired,
        )
        if result.verdict != "inconclusive":
            break
    assert result is not None
    point = None
    c_x = [r.saturation.throughput_rps for r in cand if r.saturation.throughput_rps]
    b_x = [r.saturation.throughput_rps for r in base if r.saturation.throughput_rps]
    if c_x and b_x:
        point = math.exp(
            statistics.fmean(math.log(x) for x in c_x) - statistics.fmean(math.log(x) for x in b_x)
        )
    return _Trial(
        verdict=result.verdict,
        ratio=result.ratio,
        point_ratio=point,
        runs=len(cand) + (len(base) if paired else 0),
        gate_s=gate_s,
        calibration_s=calibration_s,
        look=look,
    )


def _hint(*builds: list[_Run]) -> tuple[int, int] | None:
    """The bracket replicates re-measure: the first runs' (both builds'), as the pipeline should."""
    from perfgate.adaptive import replicate_hint

    firsts = [runs[0].saturation for runs in builds if runs]
    if len(firsts) < len(builds):
        return None
    return replicate_hint(firsts)


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


def _trial_batch(args: tuple[Any, ...]) -> list[_Trial]:
    preset, ramp, noise, regression, seed, indexes, repeat, paired, calibrated, prior = args
    return [
        _trial(preset, ramp, noise, regression, seed, i, repeat, paired, calibrated, prior)
        for i in indexes
    ]


def simulate(
    regression: float,
    trials: int,
    seed: int,
    *,
    repeat: int = 1,
    paired: bool = False,
    calibrated: bool = False,
    default_prior: bool = False,
    preset: str = "exchange",
    noise: str | None = None,
    strategy: str | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Run ``trials`` full gates for a candidate with a capacity loss of ``regression``.

    Each trial is independent (its own environment and seeds derived from ``seed``): optional
    calibration (``calibrated``: A/A runs → noise.json), the baseline (``repeat`` stored runs, or
    interleaved with the candidate when ``paired``), the candidate's ``repeat`` runs with the
    pre-planned looks, all through the real search, ``analysis`` and ``verdict`` code. Returns the
    verdict fractions with 95 % Clopper-Pearson intervals and the simulated time per gate.
    """
    import time

    if trials < 1:
        raise ValueError(f"trials must be ≥ 1, got {trials}")
    if not 0.0 <= regression < 1.0:
        raise ValueError(f"regression must be in [0, 1), got {regression}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
    pre = PRESETS[preset]
    profile = pre.noise if noise is None else NOISE_PROFILES[noise]
    if strategy not in (None, "adaptive", "linear"):
        raise ValueError(f"unknown strategy {strategy!r} (adaptive or linear)")
    ramp = pre.ramp if strategy is None else dataclasses.replace(pre.ramp, strategy=strategy)  # type: ignore[arg-type]
    started = time.perf_counter()
    indexes = list(range(trials))
    if workers <= 1 or trials < 8:
        results = _trial_batch(
            (
                pre,
                ramp,
                profile,
                regression,
                seed,
                indexes,
                repeat,
                paired,
                calibrated,
                default_prior,
            )
        )
    else:
        import concurrent.futures
        import multiprocessing

        chunks = [indexes[i :: workers * 4] for i in range(workers * 4)]
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            parts = pool.map(
                _trial_batch,
                [
                    (
                        pre,
                        ramp,
                        profile,
                        regression,
                        seed,
                        chunk,
                        repeat,
                        paired,
                        calibrated,
                        default_prior,
                    )
                    for chunk in chunks
                    if chunk
                ],
            )
            results = [t for part in parts for t in part]
    n = len(results)
    counts = {
        v: sum(1 for t in results if t.verdict == v) for v in ("block", "pass", "inconclusive")
    }
    points = [math.log(t.point_ratio) for t in results if t.point_ratio]
    looks: dict[str, int] = {}
    for t in results:
        looks[str(t.look)] = looks.get(str(t.look), 0) + 1
    out: dict[str, Any] = {
        "trials": n,
        "regression": regression,
        "block": counts["block"] / n,
        "pass": counts["pass"] / n,
        "inconclusive": counts["inconclusive"] / n,
        "block_ci": list(clopper_pearson(counts["block"], n)),
        "pass_ci": list(clopper_pearson(counts["pass"], n)),
        "inconclusive_ci": list(clopper_pearson(counts["inconclusive"], n)),
        "seed": seed,
        "mean_simulated_seconds": statistics.fmean(t.gate_s for t in results),
        "mean_calibration_seconds": statistics.fmean(t.calibration_s for t in results),
        "mean_runs": statistics.fmean(t.runs for t in results),
        "stopped_at_look": dict(sorted(looks.items())),
        "mean_log_ratio": statistics.fmean(points) if points else None,
        "sd_log_ratio": statistics.stdev(points) if len(points) > 1 else None,
        "repeat": repeat,
        "paired": paired,
        "calibrated": calibrated,
        "default_prior": default_prior,
        "strategy": ramp.strategy,
        "preset": pre.name,
        "noise": dataclasses.asdict(profile),
        "model": {**dataclasses.asdict(pre.model), "capacity_rps": pre.model.capacity_rps},
        "slo": dataclasses.asdict(pre.slo),
        "gate": {
            "max_regression": pre.gate.max_regression,
            "block_min_regression": pre.gate.block_min_regression,
        },
        "ramp": dataclasses.asdict(ramp),
        "perfgate_version": __version__,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    return out


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
        "mean_runs",
        "seed",
    )
    return {
        "rows": [{k: row[k] for k in keep} for row in rows],
        "config": {k: v for k, v in rows[0].items() if k not in keep and k != "wall_seconds"},
        "wall_seconds": round(sum(r["wall_seconds"] for r in rows), 2),
    }


def format_result(out: dict[str, Any]) -> str:
    """One :func:`simulate` result in words (what `perfgate simulate` prints without --json)."""
    mode = "paired" if out["paired"] else "stored baseline"
    cal = "calibrated" if out["calibrated"] else "no calibration"

    def part(name: str) -> str:
        lo, hi = out[f"{name}_ci"]
        return f"{name} {out[name]:.1%} [{lo:.1%}, {hi:.1%}]"

    return (
        f"{out['trials']} simulated gates, capacity loss {out['regression']:.1%} "
        f"({mode}, repeat {out['repeat']}, {cal}, {out['strategy']} search, "
        f"{out['noise']['name']} noise, seed {out['seed']}): "
        f"{part('block')}, {part('pass')}, {part('inconclusive')} (95 % Clopper-Pearson); "
        f"{out['mean_simulated_seconds'] / 60:.1f} simulated minutes of load per gate"
    )


def format_table(table: dict[str, Any]) -> str:
    """The operating-characteristic table as Markdown."""
    lines = [
        "| capacity loss | trials | block | pass | inconclusive | simulated s / gate |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table["rows"]:
        lines.append(
            f"| {r['regression']:.1%} | {r['trials']} | {r['block']:.1%} "
            f"[{r['block_ci'][0]:.1%}, {r['block_ci'][1]:.1%}] | {r['pass']:.1%} "
            f"[{r['pass_ci'][0]:.1%}, {r['pass_ci'][1]:.1%}] | {r['inconclusive']:.1%} | "
            f"{r['mean_simulated_seconds']:.0f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Adaptive search against a linear ramp of equal resolution
# ---------------------------------------------------------------------------------------------

SEARCH_SETTINGS: tuple[tuple[int, float, float], ...] = (
    # (servers, service_ms, p95 SLO ms): the reference exchange's knobs (slots, service_ms)
    # SLOs chosen so that N* is not an integer: with deterministic service a level exactly at N*
    # has p95 exactly at the SLO and its verdict is decided by rounding
    (16, 15.2, 500.0),
    (4, 20.0, 262.0),
    (8, 10.0, 245.0),
    (2, 5.0, 98.0),
    (32, 40.0, 410.0),
)


def compare_search(
    *,
    settings: tuple[tuple[int, float, float], ...] = SEARCH_SETTINGS,
    start_users: int = 10,
    step_seconds: float = 10.0,
    resolution: float = 0.05,
    noise: str = "none",
    service_cv: float = 0.0,
    seeds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Adaptive search vs a linear ramp of equal resolution (step = resolution × N*) from the
    same first level, on deterministic-service targets whose N* = SLO × servers / service is
    analytical. Returns per-setting errors and simulated-time ratios."""
    from perfgate.adaptive import adaptive
    from perfgate.analysis import saturation
    from perfgate.search import linear

    profile = NOISE_PROFILES[noise]
    rows = []
    for servers, service_ms, slo_ms in settings:
        model = TargetModel(
            servers=servers, service_ms=service_ms, service_cv=service_cv, network_ms=1.0
        )
        slo = Slo(p95_ms=slo_ms)
        n_star = model.analytical_n_star(slo_ms)
        max_users = max(start_users + 1, int(n_star * 4))
        ramp_a = RampSpec(
            strategy="adaptive",
            start_users=start_users,
            max_users=max_users,
            step_seconds=step_seconds,
            resolution=resolution,
        )
        ramp_l = dataclasses.replace(
            ramp_a, strategy="linear", step_users=max(1, round(resolution * n_star))
        )
        errors, ratios, t_a, t_l, steps_a, steps_l = [], [], [], [], [], []
        for i in range(seeds):
            run_seed = seed * 1000 + i
            ra = SimulatedRunner(model, slo, seed=run_seed, noise=profile)
            out_a = adaptive(ra, ramp_a, slo)
            sat = saturation(out_a.steps, slo, max_users=max_users)
            rl = SimulatedRunner(model, slo, seed=run_seed, noise=profile)
            out_l = linear(rl, ramp_l, slo)
            errors.append((sat.users or 0.0) / n_star - 1.0)
            ratios.append(ra.clock_s / rl.clock_s)
            t_a.append(ra.clock_s)
            t_l.append(rl.clock_s)
            steps_a.append(len(out_a.steps))
            steps_l.append(len(out_l.steps))
        rows.append(
            {
                "servers": servers,
                "service_ms": service_ms,
                "slo_p95_ms": slo_ms,
                "n_star": round(n_star, 1),
                "max_abs_error": round(max(abs(e) for e in errors), 4),
                "mean_error": round(statistics.fmean(errors), 4),
                "adaptive_s": round(statistics.fmean(t_a), 1),
                "linear_s": round(statistics.fmean(t_l), 1),
                "time_ratio": round(statistics.fmean(ratios), 3),
                "max_time_ratio": round(max(ratios), 3),
                "adaptive_steps": round(statistics.fmean(steps_a), 1),
                "linear_steps": round(statistics.fmean(steps_l), 1),
            }
        )
    return {
        "start_users": start_users,
        "step_seconds": step_seconds,
        "resolution": resolution,
        "noise": noise,
        "service_cv": service_cv,
        "seeds": seeds,
        "rows": rows,
    }
