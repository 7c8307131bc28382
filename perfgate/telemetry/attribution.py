"""Why it broke: which measured resource saturated first, how that relates to the knee, and what
a request costs. Pure functions of recorded steps (re-runnable from a saved result.json).

The rules, in order (thresholds below):

1. Nothing of the system under test was measured → ``unmeasured``: say what was missing.
2. A resource with a known limit at ≥ :data:`SATURATED` of it at the knee → ``resource``: the
   one that got there at the lowest load (ties: the fuller one). What used most of it (a route or
   the order-book rebuild, ≥ :data:`DOMINANT` of its use) and the scenario's request behind that
   are named when measured.
3. Every judged resource below :data:`SOFTWARE` at the knee → ``software``: a pool, lock or queue
   that is not measured; the request type that degraded first is the lead.
4. Otherwise ``unclear``: the highest resource is named with its level, and no cause is claimed.

The *knee* is the first measured level at or past the SLO boundary (the saturation point).
A container with a request and no limit is never judged (use beyond a request is not
saturation): where it used more than its request at the knee the evidence says so, and a
``software`` finding says the node's free capacity may be the ceiling instead (confidence low).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from perfgate import fmt
from perfgate.models import Bottleneck, Cost, ResourceReading, Saturation, StepStats
from perfgate.readings import by_series

SATURATED = 0.85  # at least this share of its limit: the resource is saturated
SOFTWARE = 0.60  # every judged resource below this at the knee: not a measured resource
DOMINANT = 0.60  # a consumer using at least this share of a saturated resource is named
PLATEAU = 0.95  # throughput within 5 % of its maximum: it has stopped growing


@dataclass(frozen=True, slots=True)
class Request:
    """A scenario request, to name the request type behind a route."""

    name: str
    method: str
    path: str


def attribute(
    steps: Sequence[StepStats],
    sat: Saturation,
    *,
    baseline_steps: Sequence[StepStats] = (),
    baseline_release: str = "the baseline",
    requests: Sequence[Request] = (),
    degraded: tuple[str, str] | None = None,  # (request name, what the analysis says)
) -> Bottleneck | None:
    """The bottleneck record of a run; None when no telemetry ran at all."""
    ran = sorted((s for s in steps if s.resources is not None), key=lambda s: (s.users, s.index))
    if not ran:
        return None
    missing = tuple(dict.fromkeys(m for s in ran for m in s.resources.missing))  # type: ignore[union-attr]
    measured = [s for s in ran if s.resources is not None and s.resources.readings]
    cost = _cost(measured, sat, baseline_steps, baseline_release)
    if not measured:
        what = missing[0] if missing else "no source answered"
        return Bottleneck(
            kind="unmeasured",
            sentence=f"Not measured: nothing of the system under test was measured ({what}).",
            confidence="low",
            knee_users=sat.users,
            missing=missing,
            cost=cost,
        )
    knee = _knee_step(measured, sat)
    judged = _judged(measured)
    plateau = _plateau(ran)
    common: Common = {"knee_users": sat.users, "missing": missing, "cost": cost}
    full = [(name, pts) for name, pts in judged.items() if _util(pts, knee.users) >= SATURATED]
    if full:
        found = _resource(full, knee, measured, plateau, sat, requests, degraded, common)
        return _requests_noted(found, knee)
    top = max(judged.items(), key=lambda kv: _util(kv[1], knee.users), default=None)
    if top is None or _util(top[1], knee.users) < SOFTWARE:
        return _requests_noted(_software(top, knee, measured, sat, degraded, common), knee)
    name, pts = top
    r = pts[knee.users]
    unclear = Bottleneck(
        kind="unclear",
        sentence=(
            f"Unclear: the fullest measured resource, {name}, was at {fmt.share(r.utilisation)} "
            f"of its {_limit(r)} at {fmt.users(knee.users)} users — high, not at its limit; no "
            f"measured resource explains the knee."
        ),
        confidence="low",
        resource=name,
        source=r.source,
        utilisation=r.utilisation,
        limit=r.limit,
        unit=r.unit,
        evidence=(_curve(name, pts, knee.users), *_reasons(sat, plateau, degraded)),
        **common,
    )
    return _requests_noted(unclear, knee)


Curve = dict[int, ResourceReading]


class Common(TypedDict):
    knee_users: float | None
    missing: tuple[str, ...]
    cost: Cost | None  # users -> the reading at that level


def _judged(steps: Sequence[StepStats]) -> dict[str, Curve]:
    """Resources with a known limit, by series (perfgate.readings): their reading at each level."""
    out: dict[str, Curve] = {}
    for s in steps:
        for name, r in by_series(s.resources).items():
            if r.utilisation is not None and r.kind != "share":
                out.setdefault(name, {})[s.users] = r
    return out


def _util(pts: Curve, users: int) -> float:
    r = pts.get(users)
    return r.utilisation if r is not None and r.utilisation is not None else 0.0


def _knee_step(steps: Sequence[StepStats], sat: Saturation) -> StepStats:
    """The first measured level at or past the SLO boundary (the last one if it never broke)."""
    if sat.users is None or not sat.broken:
        return steps[-1]
    past = [s for s in steps if s.users >= sat.users]
    return past[0] if past else steps[-1]


def _plateau(steps: Sequence[StepStats]) -> StepStats | None:
    """The first level whose throughput is within 5 % of the highest: where growth stopped."""
    if len(steps) < 2:
        return None
    top = max(s.throughput_rps for s in steps)
    first = next(s for s in steps if s.throughput_rps >= PLATEAU * top)
    return None if first is steps[-1] and len(steps) > 2 else first


def _resource(
    full: list[tuple[str, Curve]],
    knee: StepStats,
    steps: Sequence[StepStats],
    plateau: StepStats | None,
    sat: Saturation,
    requests: Sequence[Request],
    degraded: tuple[str, str] | None,
    common: Common,
) -> Bottleneck:
    def first_full(pts: Curve) -> int:
        return min(u for u, r in pts.items() if (r.utilisation or 0) >= SATURATED)

    name, pts = min(full, key=lambda kv: (first_full(kv[1]), -_util(kv[1], knee.users)))
    r, at = pts[knee.users], first_full(pts)
    consumer = _consumer(knee, name)
    request = _request_for(consumer.route, requests) if consumer is not None else None
    first_level = " (the first level measured)" if at == steps[0].users else ""
    where = (
        ", where throughput stopped growing"
        if plateau is not None and plateau.users == at
        else (f"; throughput stopped growing at {plateau.users} users" if plateau else "")
    )
    knee_text = (
        f"the SLO broke at {fmt.saturation_users(sat)} users"
        if sat.broken
        else "the SLO held at every level measured"
    )
    peak = max(x.utilisation or 0 for x in pts.values())
    sentence = (
        f"The {name} reached {fmt.share(peak)} of its "
        f"{_limit(r)} at {at} users{first_level}{where}; {knee_text}: {_bound(r)}."
    )
    if consumer is not None:
        what = f"{consumer.name}s" if consumer.name.startswith("order-book") else consumer.route
        tail = f" (the {request!r} request, {consumer.route})" if request else ""
        sentence = (
            sentence[:-1] + f" — {fmt.share(consumer.value)} of its time went to {what}{tail}."
        )
    others = [
        f"{n}: {fmt.share(_util(p, knee.users))} of its limit at {knee.users} users"
        for n, p in full
        if n != name
    ]
    high = len(steps) >= 2 and _util(pts, knee.users) >= 0.95 and at <= knee.users
    return Bottleneck(
        kind="resource",
        sentence=sentence,
        confidence="high" if high and not others else ("medium" if len(steps) >= 2 else "low"),
        resource=name,
        source=r.source,
        saturated_at_users=at,
        utilisation=r.utilisation,
        limit=r.limit,
        unit=r.unit,
        consumer=consumer.name if consumer is not None else None,
        consumer_share=consumer.value if consumer is not None else None,
        route=consumer.route if consumer is not None else "",
        request=request or (degraded[0] if degraded and not consumer else None),
        evidence=(
            _curve(name, pts, knee.users),
            *(f"also saturated: {o}" for o in others),
            *_shares_text(knee, name),
            *_reasons(sat, plateau, degraded),
        ),
        **common,
    )


def _bound(r: ResourceReading) -> str:
    if r.kind == "cpu":
        return "CPU-bound"
    if r.kind == "memory":
        return "memory-bound"
    if r.unit == "slots":
        return "bound by the slot pool"
    return f"bound by {r.name}"


def _consumer(step: StepStats, resource: str) -> ResourceReading | None:
    """What used most of ``resource`` at ``step``: the rebuild first, else the largest route."""
    assert step.resources is not None
    parts = [r for r in step.resources.readings if r.kind == "share" and r.of == resource]
    ranked = sorted(parts, key=lambda r: (not r.name.startswith("order-book"), -r.value))
    return next((r for r in ranked if r.value >= DOMINANT), None)


def _shares_text(step: StepStats, resource: str) -> list[str]:
    assert step.resources is not None
    parts = [r for r in step.resources.readings if r.kind == "share" and r.of == resource]
    if not parts:
        return []
    listed = ", ".join(f"{r.name.removeprefix('slot time of ')} {fmt.share(r.value)}" for r in
                       sorted(parts, key=lambda r: -r.value))  # fmt: skip
    return [f"use of the {resource} at {step.users} users: {listed}"]


def _software(
    top: tuple[str, Curve] | None,
    knee: StepStats,
    steps: Sequence[StepStats],
    sat: Saturation,
    degraded: tuple[str, str] | None,
    common: Common,
) -> Bottleneck:
    highest = ""
    if top is not None:
        r = top[1].get(knee.users)
        highest = f" (highest: {top[0]} at {fmt.share(r.utilisation if r else None)})"
    lead = ""
    if degraded is not None:
        growth = _growth(steps, degraded[0], knee.users)
        grew = f" and its p95 grew ×{growth:.1f}" if growth else ""
        lead = f" — the {degraded[0]!r} request degraded first{grew}"
    return Bottleneck(
        kind="software",
        sentence=(
            f"No measured resource above {fmt.share(SOFTWARE)} at the knee "
            f"({fmt.users(knee.users)} users){highest}: a software limit (pool, lock, queue)"
            f"{lead}."
        ),
        confidence="medium" if top is not None and len(steps) >= 2 else "low",
        resource=None,
        request=degraded[0] if degraded else None,
        evidence=(
            *((_curve(*top, knee.users),) if top else ()),
            *_reasons(sat, None, degraded),
        ),
        **common,
    )


def _growth(steps: Sequence[StepStats], request: str, users: int) -> float | None:
    p95 = [
        (s.users, e.p95_ms)
        for s in steps
        for e in s.endpoints
        if e.name == request and e.p95_ms and s.users <= users
    ]
    return p95[-1][1] / p95[0][1] if len(p95) >= 2 and p95[0][1] else None


def _curve(name: str, pts: Curve, knee_users: int) -> str:
    levels = sorted(pts)
    shown = levels if len(levels) <= 6 else [*levels[:3], *levels[-3:]]
    text = ", ".join(f"{fmt.share(pts[u].utilisation)} at {u}" for u in shown)
    at = knee_users if knee_users in pts else levels[-1]
    pod = _pod(pts[at])
    where = f"; at {at} users: {pod}" if pod else ""
    return f"{name} (of its {_limit(pts[levels[0]])}) by users: {text}{where}"


def _pod(r: ResourceReading) -> str:
    """The pod a Kubernetes series' reading came from, for people to look up; else ''."""
    if not r.pod:
        return ""
    of = f" (the busiest of {r.replicas} replicas)" if r.replicas and r.replicas > 1 else ""
    return f"pod {r.pod}{of}"


def _over_request(step: StepStats) -> list[tuple[float, ResourceReading]]:
    """Containers without a limit that used more than their request at ``step``, fullest first:
    they ran on the node's spare capacity, which is not measured."""
    out = [
        (r.value / r.request, r)
        for r in by_series(step.resources).values()
        if r.kind in ("cpu", "memory") and r.limit is None and r.request and r.value >= r.request
    ]
    return sorted(out, key=lambda x: (-x[0], x[1].name))


def _request_line(ratio: float, r: ResourceReading, users: int) -> str:
    what = "CPU" if r.kind == "cpu" else "memory"
    request = r.request or 0.0
    amount = (
        f"{round(request * 1000)}m"  # as the manifest would say it
        if r.unit == "cores" and request < 1
        else fmt.quantity(request, r.unit)
    )
    pod = _pod(r)
    return (
        f"{r.name}: no {what} limit; used {ratio:.1f}× its request of {amount} at the knee "
        f"({users} users{'; ' + pod if pod else ''}) — the node's free {what} is the ceiling"
    )


def _requests_noted(b: Bottleneck, knee: StepStats) -> Bottleneck:
    """Say what containers with a request and no limit did at the knee (evidence); a software
    finding is then uncertain, since the node's free capacity may have been the ceiling."""
    over = _over_request(knee)
    if not over:
        return b
    lines = [_request_line(ratio, r, knee.users) for ratio, r in over]
    b = dataclasses.replace(b, evidence=(*b.evidence, *lines))
    if b.kind != "software":
        return b
    ratio, r = over[0]
    return dataclasses.replace(
        b,
        sentence=(
            f"{b.sentence[:-1]}; or the node: {r.name} has no limit and used {ratio:.1f}× its "
            f"request, so the node's free {'CPU' if r.kind == 'cpu' else 'memory'} (not "
            f"measured) may be the ceiling."
        ),
        confidence="low",
    )


def _reasons(
    sat: Saturation, plateau: StepStats | None, degraded: tuple[str, str] | None
) -> list[str]:
    out = [f"SLO boundary: {sat.reason}"] if sat.reason else []
    if plateau is not None:
        out.append(
            f"throughput stopped growing at {plateau.users} users "
            f"({fmt.rps(plateau.throughput_rps)} req/s)"
        )
    if degraded is not None:
        out.append(degraded[1])
    return out


def _limit(r: ResourceReading) -> str:
    if r.unit == "cores":
        return f"{fmt.value(r.limit)}-core limit" if r.limit is not None else "limit"
    return (
        f"{fmt.quantity(r.limit, r.unit)} limit"
        if r.unit != "slots"
        else f"{fmt.value(r.limit)} slots"
    )


def _request_for(route: str, requests: Sequence[Request]) -> str | None:
    """The scenario request whose method and path match ``route`` ("GET /orderbook/{market}")."""
    method, _, path = route.partition(" ")
    want = path.strip("/").split("/")
    for req in requests:
        have = re.sub(r"{{.*?}}", "\0", req.path.split("?")[0]).strip("/").split("/")
        if (
            req.method.upper() == method
            and len(have) == len(want)
            and all(
                w.startswith("{") or w == h or "\0" in h for w, h in zip(want, have, strict=True)
            )
        ):
            return req.name
    return None


# ---------------------------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------------------------


def cpu_ms_per_request(step: StepStats) -> float | None:
    res = step.resources
    if res is None or res.cpu_cores is None or step.throughput_rps <= 0:
        return None
    return res.cpu_cores * 1000.0 / step.throughput_rps


def _cost(
    steps: Sequence[StepStats], sat: Saturation, baseline: Sequence[StepStats], release: str
) -> Cost | None:
    """CPU per request and capacity per core at the SLO boundary, against the baseline's."""
    with_cpu = [s for s in steps if cpu_ms_per_request(s) is not None]
    if not with_cpu:
        return None
    at = sat.users if sat.users is not None else with_cpu[-1].users
    near = min(with_cpu, key=lambda s: (abs(s.users - at), -s.users))
    assert near.resources is not None and near.resources.cpu_cores is not None
    ms = cpu_ms_per_request(near)
    tput = sat.throughput_rps if sat.throughput_rps is not None else near.throughput_rps
    cores = near.resources.cpu_cores
    per_core = tput / cores if cores > 0 else None
    text = (
        f"{fmt.small_ms(ms)} ms of CPU per request at {near.users} users; "
        f"{fmt.rps(per_core)} req/s per CPU core at the SLO boundary"
    )
    ratio = _baseline_ratio(with_cpu, baseline)
    change = ratio - 1 if ratio is not None else None
    base = ms / ratio if ms is not None and ratio else None
    if change is not None:
        more = "more" if change >= 0 else "less"
        text += (
            f"; this release needs {fmt.share(abs(change))} {more} CPU per request than "
            f"{release} ({fmt.small_ms(ms)} vs {fmt.small_ms(base)} ms)"
        )
    return Cost(
        cpu_cores=cores,
        throughput_rps=tput,
        rps_per_core=per_core,
        cpu_ms_per_request=ms,
        baseline_cpu_ms_per_request=base,
        change=change,
        text=text,
    )


def _baseline_ratio(steps: Sequence[StepStats], baseline: Sequence[StepStats]) -> float | None:
    """Candidate / baseline CPU per request: the median ratio at the levels both measured
    (CPU per request changes with load), else against the baseline's median."""
    theirs = {s.users: cpu_ms_per_request(s) for s in baseline}
    ours = {s.users: cpu_ms_per_request(s) for s in steps}
    pairs = [(o, theirs[u]) for u, o in ours.items() if o and theirs.get(u)]
    if pairs:
        return statistics.median(o / t for o, t in pairs if t)
    known = [v for v in theirs.values() if v]
    mine = [v for v in ours.values() if v]
    if not known or not mine:
        return None
    return statistics.median(mine) / statistics.median(known)
