"""A simulated system under test: a discrete-event closed queueing network (pure Python, heapq).

``N`` virtual users with zero think time each send a request, which travels ``network_ms`` to a
FCFS station of ``servers`` identical servers, is served for a random service time, and travels
``network_ms`` back; the user sends its next request at once. With deterministic service the
ground truth is analytical: capacity ``X_max = servers / service`` and, past the knee, latency
``= N / X_max`` so a p95 SLO of ``L`` breaks at ``N* = L · servers / service`` users (the
reference exchange's formula).

:class:`SimulatedRunner` implements the ``StepRunner`` protocol (``measure``/``hold``) and returns
``StepStats`` built as real runs build them (percentiles from ``perfgate.histogram.Histogram``,
the SLO check and generator health from ``perfgate.steps``). Its clock (``clock_s``) is the
trial's global clock, so the machine's noise (:mod:`.noise`) is shared by every runner of a trial.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from perfgate.histogram import Histogram
from perfgate.models import Slo, StepStats, UsersSpec
from perfgate.simulate.noise import NOISE_PROFILES, Deployment, NoiseProfile, Timeline
from perfgate.steps import judge_step, rate

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
        timeline: Timeline | None = None,
        deployment: Deployment | None = None,
        start_s: float = 0.0,
    ) -> None:
        if not 0.0 <= regression < 1.0:
            raise ValueError(f"regression must be in [0, 1), got {regression}")
        self.model = model
        self.slo = slo
        self.noise = noise or NOISE_PROFILES["none"]
        self.rng = random.Random(seed)
        # standalone use (tests, search comparison): a machine and a deployment of its own
        self.timeline = timeline or Timeline(self.noise, random.Random(self.rng.getrandbits(63)))
        self.deployment = deployment or Deployment(
            self.noise, random.Random(self.rng.getrandbits(63)), started_s=start_s
        )
        # mean service in seconds after run-level capacity and the regression under test
        self._service_s = model.service_ms / 1000.0 / capacity_factor / (1.0 - regression)
        cv = 1.0 if model.service_dist == "exponential" else model.service_cv
        self._sigma = math.sqrt(math.log1p(cv * cv)) if cv > 0 else 0.0
        self._mu = math.log(self._service_s) - self._sigma**2 / 2 if cv > 0 else 0.0
        self._net_s = model.network_ms / 1000.0
        gen_ms = (
            self.noise.generator_ms if self.noise.generator_ms is not None else model.generator_ms
        )
        self._gen_s = gen_ms / 1000.0
        self._timeout_s = model.timeout_ms / 1000.0 if model.timeout_ms else math.inf
        self.clock_s = start_s  # the trial's global clock
        self._heap: list[tuple[float, int, int, int]] = []
        self._seq = itertools.count()
        self._np = np.random.default_rng(self.rng.getrandbits(63))
        self._draws: list[float] = []
        self._draw_i = 0
        self._noisy = self.noise.name != "none" or self.deployment.log_offset != 0.0
        self._slow_until = -1.0  # the cached slowdown factor holds until then
        self._slow_factor = 1.0
        self._knee_users = model.servers * (1 + 2 * self._net_s / max(self._service_s, 1e-9))
        self._stall_start: list[float] = []  # machine stalls and throttling freezes, sorted
        self._stall_end: list[float] = []
        self._stall_i = 0
        self._stalls_until = start_s
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
        self._steps = 0

    # -- noise ---------------------------------------------------------------------------------

    def _extend_noise(self, until: float) -> None:
        """Copy the machine's stalls up to ``until`` and draw this deployment's freezes."""
        self.timeline.extend(until)
        n = self.noise
        lo, hi = self._stalls_until, until + 1.0
        if hi <= lo:
            return
        stalls = self.timeline.stalls
        for t in stalls[bisect.bisect_right(stalls, lo) : bisect.bisect_right(stalls, hi)]:
            self._add_stall(t, t + n.stall_s)
        if n.throttle_per_s > 0:  # load-dependent: CPU quota exhausted at high utilisation
            utilisation = min(1.0, self._users / self._knee_users)
            t = math.floor(lo)
            while t < hi:
                if t >= lo and self.deployment.throttled(utilisation, 1.0):
                    start = t + self.deployment.rng.random()
                    self._add_stall(start, start + n.throttle_s)
                t += 1.0
        self._stalls_until = hi

    def _add_stall(self, start: float, end: float) -> None:
        i = bisect.bisect_right(self._stall_start, start, lo=self._stall_i)
        self._stall_start.insert(i, start)
        self._stall_end.insert(i, end)

    def _slowdown(self, t: float) -> float:
        """Service-time multiplier at ``t``: machine, deployment, warm-up (``t`` only grows)."""
        if t >= self._slow_until:
            machine, until_m = self.timeline.factor(t)
            own, until_d = self.deployment.factor(t)
            self._slow_factor = machine * own
            self._slow_until = min(until_m, until_d)
        return self._slow_factor * self.deployment.warmup(t)

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
        starts = self._stall_start
        if not starts:
            return t + s
        ends = self._stall_end
        i = self._stall_i  # first stall that has not ended by t (service starts are monotone)
        while i < len(starts) and ends[i] <= t:
            i += 1
        self._stall_i = i
        if i < len(starts) and starts[i] <= t:  # starts inside a stall: wait for its end
            t = ends[i]
            i += 1
        end = t + s
        while i < len(starts) and starts[i] < end:
            end += ends[i] - starts[i]
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
        self._steps += 1
        return judge_step(
            hist,
            users=users,
            duration_s=duration,
            requests=requests,
            failures=failures,
            latency_sum_ms=lat_sum,
            per_second=per_second,
            slo=self.slo,
            users_spec=UsersSpec(),  # perfgate's own users, no think time
            cpu_percent=min(100.0, 100.0 * rate(requests, duration) * self._gen_s),
            index=self._steps - 1,
            phase=phase,
            started_s=start,
            mean_of="completions",  # the real runner reports the successes' mean (judge_step)
        )
