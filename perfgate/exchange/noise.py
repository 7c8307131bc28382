"""The reference exchange's optional capacity noise: slow drift and noisy-neighbour episodes.

Pure Python on a clock the caller passes (the event loop's time), so it is unit-tested without
a server. :meth:`CapacityNoise.factor` is the multiplier of one request's slot time at the moment
its service starts; the capacity model asks it with non-decreasing times, and each process draws
its noise from its own seeded RNG, so two exchanges drift and suffer neighbours independently.
"""

from __future__ import annotations

import math
import os
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perfgate.exchange import ExchangeConfig

__all__ = ["CapacityNoise"]


class CapacityNoise:
    """Slot-time multiplier: ``exp(−x(t))`` × ``episode_slowdown`` while an episode lasts.

    ``x`` is log capacity, an Ornstein–Uhlenbeck process with stationary SD ``drift_sd`` and
    correlation time ``drift_tau_s``, started from its stationary law (so a fresh process already
    sits somewhere in its spread) and advanced exactly between calls. Episodes start as a Poisson
    process of rate ``episode_per_s`` and last an exponential time of mean ``episode_mean_s``;
    overlapping episodes merge (the slowdown does not compound), so a share
    ``1 − exp(−episode_per_s × episode_mean_s)`` of the time is spent in one.
    """

    __slots__ = (
        "_end",
        "_mean_s",
        "_next_start",
        "_rate",
        "_rng",
        "_sd",
        "_slowdown",
        "_t",
        "_tau_s",
        "_x",
    )

    def __init__(
        self,
        *,
        drift_sd: float = 0.0,
        drift_tau_s: float = 60.0,
        episode_per_s: float = 0.0,
        episode_mean_s: float = 2.0,
        episode_slowdown: float = 1.5,
        rng: random.Random,
    ) -> None:
        self._sd = drift_sd
        self._tau_s = drift_tau_s
        self._rate = episode_per_s
        self._mean_s = episode_mean_s
        self._slowdown = episode_slowdown
        self._rng = rng
        self._t: float | None = None  # time of the last advance; None until the first call
        self._x = 0.0
        self._next_start = math.inf
        self._end = -math.inf  # end of the current (or last) episode

    @classmethod
    def from_config(cls, config: ExchangeConfig) -> CapacityNoise | None:
        """The noise the config asks for, or None when its knobs are off (the exact model)."""
        if config.drift_sd == 0 and (config.episode_per_s == 0 or config.episode_slowdown == 1):
            return None
        return cls(
            drift_sd=config.drift_sd,
            drift_tau_s=config.drift_tau_s,
            episode_per_s=config.episode_per_s,
            episode_mean_s=config.episode_mean_s,
            episode_slowdown=config.episode_slowdown,
            # Its own stream: the start-up orders and jitter draw exactly what they drew before;
            # without a noise_seed each process draws its own (a real process's noise is not a
            # property of its release, and a restart does not replay it).
            rng=random.Random(
                f"perfgate-exchange-noise:{config.noise_seed}"
                if config.noise_seed is not None
                else os.urandom(16)
            ),
        )

    def factor(self, t: float) -> float:
        """Slot-time multiplier at time ``t`` (s); earlier times than the last see its state."""
        if self._t is None:
            self._start(t)
        elif t > self._t:
            self._advance(t)
        slower = math.exp(-self._x) if self._sd else 1.0
        return slower * self._slowdown if t < self._end else slower

    def in_episode(self, t: float) -> bool:
        """Whether a noisy-neighbour episode slows service at time ``t``."""
        self.factor(t)
        return t < self._end

    def _start(self, t: float) -> None:
        self._t = t
        if self._sd:
            self._x = self._rng.gauss(0.0, self._sd)
        if self._rate:
            self._next_start = t + self._rng.expovariate(self._rate)
            self._advance(t)

    def _advance(self, t: float) -> None:
        assert self._t is not None
        if self._sd and t > self._t:
            # Exact OU transition over dt: keeps the stationary SD whatever the call rate.
            a = math.exp(-(t - self._t) / self._tau_s)
            self._x = a * self._x + self._sd * math.sqrt(1.0 - a * a) * self._rng.gauss(0.0, 1.0)
        self._t = t
        while self._next_start <= t:
            length = self._rng.expovariate(1.0 / self._mean_s)
            self._end = max(self._end, self._next_start + length)
            self._next_start += self._rng.expovariate(self._rate)
