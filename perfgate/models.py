"""Plain data passed between pipeline stages.

Every record is a small frozen dataclass with units in its field names. Records that cross a
stage boundary serialise to JSON with :func:`to_jsonable` and come back with :func:`from_jsonable`,
so analysis, comparison and reporting can be re-run from a saved ``result.json``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

RESULT_SCHEMA = 1
BASELINE_SCHEMA = 1

Verdict = Literal["pass", "block", "inconclusive"]
Provider = Literal["none", "embedded", "kubernetes"]
Strategy = Literal["linear", "adaptive"]

_FROZEN = {"frozen": True, "slots": True, "kw_only": True}


# ---------------------------------------------------------------------------------------------
# Scenario (the config stage's output)
# ---------------------------------------------------------------------------------------------


@dataclass(**_FROZEN)
class RequestSpec:
    """One weighted request of the virtual users' mix.

    String fields (``path``, values inside ``json``/``params``/``headers``) may hold templates
    such as ``{{ rand_int(100, 200) }}``; see ``perfgate.load.templates``.
    """

    name: str
    method: str = "GET"
    path: str = "/"
    weight: int = 1
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = field(default=None, repr=False)
    capture: dict[str, str] | None = None  # var name -> dotted path into the JSON response
    expect_status: tuple[int, ...] = ()  # empty = any 2xx/3xx is a success


@dataclass(**_FROZEN)
class StreamExpect:
    """A request whose answer announces an event: the user awaits the event carrying its id."""

    request: str  # the name of a request in users.requests
    id: str  # dotted path to the id in the request's JSON response
    event_id: str  # dotted path to the same id in an event
    match: dict[str, Any] | None = None  # dotted path -> value an awaited event must also have


@dataclass(**_FROZEN)
class StreamSpec:
    """``users.streams``: one WebSocket per virtual user, events correlated with requests."""

    url: str  # a path on the target (ws:// or wss:// derived from its URL) or a ws(s):// URL
    subscribe: Any = None  # JSON message (templates allowed) sent once connected; None: none
    expect: tuple[StreamExpect, ...] = ()
    timeout_s: float = 5.0  # an awaited event not received by then is lost
    connect_timeout_s: float = 5.0
    wait: bool = False  # each user waits for its awaited event (or its timeout) before going on


@dataclass(**_FROZEN)
class UsersSpec:
    """What each closed-model virtual user does."""

    wait_s: float = 0.0
    requests: tuple[RequestSpec, ...] = ()
    locustfile: str | None = None  # absolute path when set
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    secret_values: tuple[str, ...] = field(default=(), repr=False)  # redacted from every output
    streams: StreamSpec | None = None  # event subscriptions (None: requests only)


@dataclass(**_FROZEN)
class RampSpec:
    """How load levels are chosen."""

    strategy: Strategy = "linear"
    start_users: int = 10
    step_users: int = 10
    max_users: int = 600
    step_seconds: float = 10.0
    settle_seconds: float | None = None  # None: min(3 s, step_seconds / 4)
    resolution: float = 0.05
    min_samples: int = 400
    max_step_seconds: float | None = None  # None: 3 × step_seconds
    cooldown_seconds: float = 3.0

    @property
    def settle_s(self) -> float:
        if self.settle_seconds is not None:
            return self.settle_seconds
        return min(3.0, self.step_seconds / 4)


@dataclass(**_FROZEN)
class Slo:
    p95_ms: float = 250.0
    error_rate: float = 0.01
    event_p95_ms: float | None = None  # request sent → its event received (None: not judged)
    event_loss_rate: float | None = None  # share of awaited events lost (None: not judged)


@dataclass(**_FROZEN)
class GateSpec:
    min_users: int | None = None
    max_regression: float = 0.10
    block_min_regression: float = 0.05  # practical size: never block for less than this
    budget_minutes: float = 8.0  # load-time budget of the sequential decision (then inconclusive)
    interleave: Literal["simultaneous", "alternate"] = "simultaneous"  # side-by-side windows
    max_drift: float | None = None  # block when credibly more than this below the reference
    drift_releases: int = 10  # the reference: the best of this many newest stored releases


@dataclass(**_FROZEN)
class KubernetesSpec:
    manifests: tuple[str, ...] = ()  # absolute paths (files or folders)
    service: str = ""
    port: int = 8080
    url: str | None = None
    ready_timeout_s: float = 300.0
    image: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(**_FROZEN)
class StagingSpec:
    provider: Provider = "embedded"
    embedded: dict[str, Any] = field(default_factory=dict)
    kubernetes: KubernetesSpec | None = None
    target: str | None = None  # provider none: the service's URL (--target/--host win over it)


@dataclass(**_FROZEN)
class LoadSpec:
    workers: int = 1
    request_timeout_s: float = 10.0
    placement: Literal["local", "kubernetes"] = "local"  # kubernetes: worker pods in staging
    worker_image: str | None = None  # the pods' image (perfgate installed); placement kubernetes


@dataclass(**_FROZEN)
class PromQuery:
    """One named PromQL query of ``metrics.prometheus.queries``, sampled per load level."""

    name: str
    query: str  # may hold {{ namespace }} (the staging namespace)
    limit: float | None = None  # the query's capacity (e.g. cores): then judged like a resource
    unit: str = ""


@dataclass(**_FROZEN)
class PrometheusSpec:
    url: str  # the server's base URL
    queries: tuple[PromQuery, ...] = ()


@dataclass(**_FROZEN)
class MetricsSpec:
    """Resource telemetry beyond what staging offers by itself (the scenario's ``metrics``)."""

    prometheus: PrometheusSpec | None = None
    enabled: bool = True  # false: no telemetry at all (not even the exchange's or the pods')


@dataclass(**_FROZEN)
class Scenario:
    name: str
    path: str  # the file it was read from ("" when built in code)
    content_hash: str  # sha256 of the normalised scenario, for fingerprints
    staging: StagingSpec
    users: UsersSpec
    ramp: RampSpec
    slo: Slo
    gate: GateSpec
    load: LoadSpec = field(default_factory=LoadSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    # what content_hash covers, key by key ("ramp.max_users": "600"; credentials hashed)
    identity: dict[str, str] = field(default_factory=dict, compare=False)


# ---------------------------------------------------------------------------------------------
# Measurements (the load stage's output)
# ---------------------------------------------------------------------------------------------


@dataclass(**_FROZEN)
class EndpointStats:
    name: str
    method: str
    requests: int
    failures: int
    throughput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    error_rate: float


@dataclass(**_FROZEN)
class GeneratorHealth:
    """How the load generator itself fared during one step."""

    cpu_percent: float  # busiest generator process, % of one core
    loop_lag_ms: float  # p95 event-loop lag of the generator
    little_ratio: float | None  # throughput × mean latency / users (≈1 when healthy)
    limited: bool
    reason: str = ""
    event_read_lag_ms: float | None = None  # p95 server sent → generator read an event


@dataclass(**_FROZEN)
class ResourceReading:
    """One resource of the system under test over one load level's measuring window.

    ``value`` is the window's mean in ``unit``; ``limit`` the capacity it is judged against (a
    container's CPU limit in cores, the exchange's slots), ``utilisation`` = value / limit (0 … 1,
    more when a limit is exceeded). ``of`` names the resource a ``share`` reading splits (the
    order-book rebuild's share of the exchange's slot time). The name is the series' stable
    identity across levels, runs and namespaces (``perfgate.readings``): a Kubernetes reading is
    named by its workload and container, and ``pod`` says which replica it came from.
    """

    name: str  # "exchange slot pool", "container web/app CPU", "prometheus: queue"
    source: str  # exchange | process | kubernetes | prometheus
    kind: str  # utilisation | cpu | memory | share | value
    value: float
    unit: str = ""  # "slots", "cores", "MB", "%", "" (a query's own unit)
    limit: float | None = None
    utilisation: float | None = None
    of: str = ""  # share readings: the resource whose use this is a part of
    route: str = ""  # share readings: the HTTP route (METHOD /path/{param}) it comes from
    request: float | None = None  # a container's request, in ``unit`` (not a limit: not judged)
    pod: str = ""  # Kubernetes: the full name of the pod (the busiest replica) it was read from
    replicas: int | None = None  # Kubernetes: the workload's pods measured in the window


@dataclass(**_FROZEN)
class StepResources:
    """What the telemetry measured of the system under test during one level's window."""

    readings: tuple[ResourceReading, ...] = ()
    cpu_cores: float | None = None  # CPU the system under test used (all its processes), cores
    events: tuple[str, ...] = ()  # restarts, OOM kills seen during the window, in words
    missing: tuple[str, ...] = ()  # what could not be measured, in words


@dataclass(**_FROZEN)
class ErrorKind:
    """One kind of failure of one request type within one step (the report's errors table)."""

    method: str  # "" for a user error outside any request
    name: str
    kind: str  # "HTTP 503", "ConnectionResetError: ...", "user error: KeyError: ..."
    count: int
    first_s: float  # first seen, seconds into the step's measuring window


@dataclass(**_FROZEN)
class EventStats:
    """Events awaited by one step's users (``users.streams``), filed by outcome time.

    Latency is from sending the request to receiving its event; ``lost`` events were not received
    within the stream's ``timeout_s``; ``backlog_mean`` is the mean number of events awaited at
    any moment of the window (the lag, in events); ``read_lag_p95_ms`` how long events waited
    for the generator to read them after the server sent them (the generator's health).
    """

    expected: int  # received + lost
    received: int
    lost: int
    loss_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None = None
    p95_ci_ms: tuple[float, float] | None = None
    backlog_mean: float = 0.0
    read_lag_p95_ms: float | None = None
    stream_errors: int = 0  # connections refused or closed, malformed events
    histogram: dict[str, int] = field(default_factory=dict, repr=False)


@dataclass(**_FROZEN)
class StepStats:
    """One load level, measured after its settle period."""

    users: int
    duration_s: float
    requests: int
    failures: int
    throughput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float
    slo_ok: bool
    index: int = 0
    started_s: float = 0.0  # offset of the measuring window from the run's start
    mean_ms: float | None = None
    max_ms: float | None = None
    p95_ci_ms: tuple[float, float] | None = None
    phase: str = "ramp"  # ramp | search | bisect | confirm | replicate
    slo_reason: str = ""  # why the SLO failed at this step, in words
    endpoints: tuple[EndpointStats, ...] = ()
    generator: GeneratorHealth | None = None
    errors: tuple[tuple[str, int], ...] = ()  # most frequent error messages with counts
    histogram: dict[str, int] = field(
        default_factory=dict, repr=False
    )  # mergeable, see histogram.py
    stalls: int = 0  # 1-s windows with < 50 % of the step's median completions
    resources: StepResources | None = None  # telemetry of the system under test (None: none ran)
    p999_ms: float | None = None
    error_kinds: tuple[ErrorKind, ...] = ()  # by (request, status/exception), most frequent first
    bytes_sent: int = 0  # request lines, headers and bodies as sent (0: not recorded)
    bytes_received: int = 0  # response bodies (Locust's response_length)
    events: EventStats | None = None  # users.streams only


@dataclass(**_FROZEN)
class TimelinePoint:
    t_s: float
    users: int
    throughput_rps: float
    p95_ms: float | None
    error_rate: float


# ---------------------------------------------------------------------------------------------
# Analysis and verdict
# ---------------------------------------------------------------------------------------------


@dataclass(**_FROZEN)
class Saturation:
    """The SLO boundary: users and req/s where the SLO stops holding."""

    users: float | None
    throughput_rps: float | None
    broken: bool
    reason: str
    bracket: tuple[int, int] | None = None  # (last passing users, first failing users)
    users_ci: tuple[float, float] | None = None
    throughput_ci: tuple[float, float] | None = None
    censored: Literal["no", "above_max", "below_start"] = "no"
    broken_by: Literal["", "request", "event"] = ""  # which SLO broke first ("": none broke)


@dataclass(**_FROZEN)
class Fingerprint:
    scenario_hash: str
    slo: str
    perfgate_version: str
    cpu_count: int
    provider: str = ""
    target: str = ""
    python: str = ""
    machine: str = ""
    # the scenario key by key (Scenario.identity): says which keys changed when the hash does
    scenario: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(**_FROZEN)
class BaselineRef:
    release: str
    saturation: Saturation
    created_at: str = ""
    path: str = ""
    fingerprint: Fingerprint | None = None
    mode: Literal["side-by-side", "stored"] = "stored"  # measured now next to the candidate, or not


@dataclass(**_FROZEN)
class WindowStats:
    """One short measurement window of the side-by-side gate (one build, one load level)."""

    build: Literal["candidate", "baseline"]
    pair: int  # 1-based index of the window pair it belongs to
    users: int
    duration_s: float
    requests: int
    failures: int
    goodput_rps: float  # successful requests per second: what the gate compares
    p95_ms: float | None
    arrangement: int = 1  # +1: builds on their first deployments; -1: swapped (cross-over)
    started_s: float = 0.0  # seconds since the gate's first window
    generator_limited: bool = False
    session: int = 0  # staging session: 0, or 1 for the pairs of an extension (--extend)


@dataclass(**_FROZEN)
class LookRecord:
    """One planned look of the sequential decision: the estimate and what it decided."""

    index: int
    pairs: int  # window pairs (or candidate windows, stored mode) judged at this look
    ratio: float  # candidate / baseline goodput at the window level
    ratio_lo: float  # lower bound at this look's pass level
    ratio_hi: float  # upper bound at this look's block level
    se_log: float
    df: float
    alpha_block: float
    alpha_pass: float
    outcome: Literal["block", "pass", "continue", "inconclusive"]
    elapsed_s: float
    session: int = 0  # 1: a look of an extension (--extend), spending the kept share


@dataclass(**_FROZEN)
class RuleResult:
    """One gate rule, evaluated: what it checked, the numbers, and the margin."""

    name: str
    outcome: Literal["pass", "fail", "inconclusive", "skipped"]
    message: str
    value: float | None = None
    threshold: float | None = None
    margin: float | None = None  # > 0: room left; < 0: by how much it was missed


@dataclass(**_FROZEN)
class GateResult:
    verdict: Verdict
    reasons: tuple[str, ...]
    rules: tuple[RuleResult, ...] = ()
    ratio: float | None = None  # candidate / baseline throughput at the SLO
    ratio_ci: tuple[float, float] | None = None


@dataclass(**_FROZEN)
class Cost:
    """What a request costs the system under test, in CPU (from the steps' telemetry)."""

    cpu_cores: float | None  # CPU used at the SLO boundary, cores
    throughput_rps: float | None  # req/s at the SLO boundary
    rps_per_core: float | None  # capacity per CPU core
    cpu_ms_per_request: float | None  # CPU time per request, ms
    baseline_cpu_ms_per_request: float | None = None
    change: float | None = None  # cpu_ms_per_request / the baseline's − 1 (0.18: 18 % more)
    text: str = ""


@dataclass(**_FROZEN)
class Bottleneck:
    """Why the release broke: the resource that saturated first and how it relates to the knee.

    ``kind``: ``resource`` (a measured resource at its limit at the knee), ``software`` (every
    measured resource well below its limit: a pool, lock or queue), ``unclear`` (something high
    but not at its limit), ``unmeasured`` (no telemetry of the system under test), ``none`` (the
    SLO never broke).
    """

    kind: Literal["resource", "software", "unclear", "unmeasured", "none"]
    sentence: str
    confidence: Literal["high", "medium", "low"]
    resource: str | None = None  # the resource that saturated first
    source: str = ""
    saturated_at_users: int | None = None  # first level where it was at its limit
    knee_users: float | None = None  # the SLO boundary
    utilisation: float | None = None  # at the knee level
    limit: float | None = None
    unit: str = ""
    consumer: str | None = None  # what used most of it (the order-book rebuild), when dominant
    consumer_share: float | None = None
    route: str = ""
    request: str | None = None  # the scenario's request type behind it (or degraded first)
    evidence: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    cost: Cost | None = None


@dataclass(**_FROZEN)
class RunResult:
    """Everything a run measured and decided: this is result.json."""

    scenario: str
    release: str
    verdict: Verdict
    reasons: tuple[str, ...]
    saturation: Saturation
    baseline: BaselineRef | None
    steps: tuple[StepStats, ...]
    generator: dict[str, Any]
    started_at: str
    finished_at: str
    perfgate_version: str
    schema: int = RESULT_SCHEMA
    rules: tuple[RuleResult, ...] = ()
    slo: Slo = field(default_factory=Slo)
    gate: GateSpec = field(default_factory=GateSpec)
    target: str = ""
    strategy: str = "linear"
    fingerprint: Fingerprint | None = None
    timeline: tuple[TimelinePoint, ...] = ()
    replicates: tuple[Saturation, ...] = ()
    diagnostics: dict[str, Any] = field(default_factory=dict)
    mode: Literal["run", "ramp"] = "run"  # "ramp": a manual ramp, no gate
    aborted: bool = False
    abort_reason: str = ""
    command: str = ""
    baseline_steps: tuple[StepStats, ...] = ()
    windows: tuple[WindowStats, ...] = ()  # the side-by-side (or stored-mode) gate's windows
    looks: tuple[LookRecord, ...] = ()
    staging_recipe: dict[str, Any] = field(default_factory=dict)  # how this release was staged
    bottleneck: Bottleneck | None = None  # why it broke (None: no telemetry ran)
    # the scenario changed since the previous baseline: what, and how it was met (accepted: why)
    scenario_change: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Release history (perfgate.history builds it; the gate's drift rule and the report read it)
# ---------------------------------------------------------------------------------------------


@dataclass(**_FROZEN)
class Link:
    """How a release compared with the one it was gated against: ln(its capacity / that one's)."""

    release: str  # the release it was judged against
    mode: str  # side-by-side | stored | replicates
    log_ratio: float  # ln(throughput ratio at the boundary), candidate / that release
    se_log: float  # standard error of log_ratio


_Z98 = NormalDist().inv_cdf(0.99)  # the gate's intervals are 98 % two-sided (1 % per side)


def link_of(result: RunResult) -> Link | None:
    """The gate's estimate of ``result`` against its baseline, or None when it made none.

    The last planned look carries the estimate and its standard error (window designs); the
    replicate design leaves only its 98 % interval, from which the standard error is taken.
    """
    base = result.baseline
    if base is None or result.aborted:
        return None
    if result.looks:
        look = result.looks[-1]
        if look.ratio > 0 and look.se_log > 0:
            return Link(
                release=base.release,
                mode=base.mode,
                log_ratio=math.log(look.ratio),
                se_log=look.se_log,
            )
    ratio, ci = result.diagnostics.get("gate_ratio"), result.diagnostics.get("gate_ratio_ci")
    if not isinstance(ratio, int | float) or not isinstance(ci, list | tuple) or len(ci) != 2:
        return None
    lo, hi = ci
    if not (ratio > 0 and isinstance(lo, int | float) and lo > 0 and isinstance(hi, int | float)):
        return None
    se = (math.log(hi) - math.log(lo)) / (2 * _Z98)
    if not se > 0:
        return None
    mode = "replicates" if result.replicates else base.mode
    return Link(release=base.release, mode=mode, log_ratio=math.log(ratio), se_log=se)


@dataclass(**_FROZEN)
class HistoryRow:
    """One release of a scenario's history: its saturation point and its capacity level.

    ``level_log`` is ln(capacity / the first release's), chained through each release's gate
    estimate against its parent (side by side where it was measured so, else stored numbers);
    ``level_se`` is its standard error, the links' errors added up along the chain.
    """

    release: str
    time: str  # UTC ISO-8601: when it was stored (or the run finished, for a result.json)
    source: Literal["baseline", "result"]
    verdict: str
    users: float | None
    users_ci: tuple[float, float] | None
    throughput_rps: float | None
    throughput_ci: tuple[float, float] | None
    censored: str
    parent: str | None  # the release its level is chained from (None: the first)
    change_log: float | None  # ln(capacity / parent's)
    change_se: float | None
    change_how: str  # side-by-side | stored | replicates | stored numbers (the fallback)
    level_log: float
    level_se: float
    p95_ms: tuple[tuple[int, float | None], ...] = ()  # (users, p95 ms) at the table's levels
    # the system under test at the boundary (the highest passing level), where telemetry ran:
    cpu_cores: float | None = None
    utilisation: tuple[tuple[str, float], ...] = ()  # (resource, value / limit)
    change_point: bool = False  # a change in level starts at this release
    reference: bool = False  # the release marked as the drift reference


@dataclass(**_FROZEN)
class ChangePoint:
    """A change in the capacity level, found by E-divisive means (perfgate.history)."""

    release: str  # the first release after the change
    index: int  # its row in the history
    change: float  # relative change of the level: after / before − 1
    p_value: float  # of the permutation test
    z: float  # the change over its standard error from the links' noise
    tested: bool = True  # False: too few releases for the permutation test; the noise test decided


@dataclass(**_FROZEN)
class History:
    scenario: str
    rows: tuple[HistoryRow, ...] = ()
    change_points: tuple[ChangePoint, ...] = ()
    reference: str | None = None  # marked with `perfgate baseline mark-reference`
    p95_levels: tuple[int, ...] = ()


# ---------------------------------------------------------------------------------------------
# JSON round trip
# ---------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Turn records (and tuples of them) into JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


_HINTS: dict[type, dict[str, Any]] = {}


def from_jsonable(cls: type[Any], data: Any) -> Any:
    """Rebuild a record of type ``cls`` from :func:`to_jsonable` output.

    Unknown keys are ignored (a newer minor writer may add some); missing keys take defaults.
    ``null`` is accepted only where the type allows it (``X | None``, ``Any``). Raises
    ``TypeError``/``ValueError`` on data of the wrong shape, naming where
    (``[2].users: expected an integer, got None``).
    """
    try:
        return _convert(cls, data)
    except _ShapeError as exc:
        raise exc.as_error() from None


class _ShapeError(Exception):
    """Data of the wrong shape at ``path`` (built up on the way out of the recursion)."""

    def __init__(self, message: str, kind: type[Exception] = TypeError) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.path = ""

    def at(self, step: str) -> _ShapeError:
        self.path = step + self.path
        return self

    def as_error(self) -> Exception:
        where = self.path.lstrip(".")
        return self.kind(f"{where}: {self.message}" if where else self.message)


def _item(tp: Any, value: Any, step: str) -> Any:
    try:
        return _convert(tp, value)
    except _ShapeError as exc:
        raise exc.at(step) from None


def _nullable(tp: Any) -> bool:
    if tp is Any or tp is type(None):
        return True
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(tp)
    )


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        if _nullable(tp):
            return None
        raise _ShapeError(f"expected {_expected(tp)}, got null")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value) if len(args) == 1 else value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _ShapeError(f"{value!r} is not one of {typing.get_args(tp)}", ValueError)
        return value
    if origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise _ShapeError(f"expected a list, got {type(value).__name__}")
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_item(items[0], v, f"[{i}]") for i, v in enumerate(value))
        if len(value) != len(items):
            raise _ShapeError(f"expected {len(items)} items, got {len(value)}", ValueError)
        return tuple(
            _item(a, v, f"[{i}]") for i, (a, v) in enumerate(zip(items, value, strict=True))
        )
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _ShapeError(f"expected an object, got {type(value).__name__}")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record(tp, value)
    return _scalar(tp, value)


def _record(tp: type[Any], value: Any) -> Any:
    if not isinstance(value, dict):
        raise _ShapeError(f"expected an object for {tp.__name__}, got {type(value).__name__}")
    hints = _HINTS.get(tp)
    if hints is None:
        hints = _HINTS[tp] = typing.get_type_hints(tp)
    kwargs = {
        f.name: _item(hints[f.name], value[f.name], f".{f.name}")
        for f in dataclasses.fields(tp)
        if f.name in value
    }
    missing = [
        f.name
        for f in dataclasses.fields(tp)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _ShapeError(f"missing key {missing[0]!r} of {tp.__name__}", ValueError)
    return tp(**kwargs)


def _scalar(tp: Any, value: Any) -> Any:
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _ShapeError(f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _ShapeError(f"expected an integer, got {value!r}")
        return value
    if tp is str and not isinstance(value, str):
        raise _ShapeError(f"expected a string, got {value!r}")
    if tp is bool and not isinstance(value, bool):
        raise _ShapeError(f"expected true/false, got {value!r}")
    return value


def _expected(tp: Any) -> str:
    """What a value of type ``tp`` is, in words."""
    names = {float: "a number", int: "an integer", str: "a string", bool: "true/false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list"
    if origin is Literal:
        return f"one of {typing.get_args(tp)}"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "an object"
    return str(tp)
