"""The staging stage: give the load a target URL, and always take down what was set up for it.

Providers share one interface, :func:`provision`, a context manager yielding a
:class:`StagedTarget`:

- ``none``: an existing service (``--target URL``); validated and probed, nothing to tear down.
- ``embedded``: the reference exchange (``python -m perfgate.exchange``) started on 127.0.0.1 in its
  own process group and stopped on exit, whatever the exit (see :mod:`perfgate.staging.embedded`).
- ``kubernetes``: a fresh namespace from the scenario's manifests
  (:mod:`perfgate.staging.kubernetes`, imported only when used).
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from perfgate.errors import InputError, StagingError, TargetUnreachable
from perfgate.models import Scenario
from perfgate.redaction import redact_text, redact_url, url_password

__all__ = [
    "PROVIDERS",
    "StagedTarget",
    "StagingOptions",
    "probe_target",
    "probe_url",
    "provision",
    "redact_url",
    "validate_url",
]

PROVIDERS = ("none", "embedded", "kubernetes")
PROBE_TIMEOUT_S = 5.0  # how long `none` waits for an existing target to answer at all
_PROBE_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedTarget:
    url: str  # base URL the load goes to
    provider: str  # none | embedded | kubernetes
    description: str  # one line for the console/report
    namespace: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # e.g. exchange config, for the report
    # How this target was staged, recorded in result.json and stored baselines so a later run
    # can stage this release again side by side (kubernetes: image, variables, manifests_digest).
    recipe: dict[str, Any] = field(default_factory=dict)
    # Serve another recipe at the same URL (the gate's cross-over swaps the two builds'
    # deployments); None when the provider cannot (an existing target, kubernetes for now).
    restage: Callable[[Mapping[str, Any]], None] | None = field(
        default=None, repr=False, compare=False
    )
    # For the telemetry stage: the pid of the local process serving the target now (embedded;
    # a restage changes it), and GET of a path on the cluster's API as (status, JSON) (kubernetes).
    pid: Callable[[], int | None] | None = field(default=None, repr=False, compare=False)
    api_get: Callable[[str], tuple[int, Any]] | None = field(
        default=None, repr=False, compare=False
    )


def _no_log(msg: str) -> None:
    del msg


@dataclass(frozen=True, slots=True, kw_only=True)
class StagingOptions:
    release: str = "dev"
    run_id: str = ""  # short unique id of this run
    kubeconfig: str | None = None
    context: str | None = None
    keep_namespace: bool = False
    log: Callable[[str], None] = _no_log  # progress lines for the console
    # How to stage a *previous* release instead of the scenario's own: kubernetes
    # {"image": str, "variables": {...}}; embedded {"exchange": {...knobs}}; None = the scenario
    # as written.
    recipe: Mapping[str, Any] | None = None
    # Object names the scenario's manifests must not use, because another stage puts its own
    # objects into the namespace (the load generators' prefix, with load.placement kubernetes);
    # checked offline with the other manifest errors. None = no names reserved.
    reserved_prefix: str | None = None


_DEFAULT_OPTIONS = StagingOptions()


@contextlib.contextmanager
def provision(
    scenario: Scenario,
    *,
    provider: str | None = None,
    target: str | None = None,
    options: StagingOptions = _DEFAULT_OPTIONS,
) -> Iterator[StagedTarget]:
    """Yield the target to load; tear down on exit (normal, exception or KeyboardInterrupt).

    ``provider`` None means the scenario's ``staging.provider``; a ``target`` URL means ``none``
    (without one, provider ``none`` loads the scenario's ``staging.target``).
    """
    if target is None and (provider or scenario.staging.provider) == "none":
        target = scenario.staging.target
    if target is not None:
        if provider not in (None, "none"):
            raise InputError(f"--target cannot be combined with --staging {provider}")
        provider = "none"
    chosen = provider or scenario.staging.provider
    if chosen == "none":
        if target is None:
            raise InputError(
                "staging provider 'none' needs a target URL: --target/--host URL, "
                "PERFGATE_TARGET or the scenario's staging.target (a scenario without a "
                "`staging` section loads your service, not the reference exchange)"
            )
        with _provision_none(target, options) as staged:
            yield staged
    elif chosen == "embedded":
        from perfgate.staging.embedded import provision_embedded

        with provision_embedded(scenario, options) as staged:
            yield staged
    elif chosen == "kubernetes":
        with _provision_kubernetes(scenario, options) as staged:
            yield staged
    else:
        raise InputError(
            f"unknown staging provider {chosen!r} (choose from {', '.join(PROVIDERS)})"
        )


@contextlib.contextmanager
def _provision_kubernetes(scenario: Scenario, options: StagingOptions) -> Iterator[StagedTarget]:
    try:
        # Imported only here: the kubernetes client is heavy and must stay out of other runs.
        from perfgate.staging.kubernetes import provision_kubernetes
    except ImportError as exc:
        detail = "" if exc.name == "perfgate.staging.kubernetes" else f" ({exc})"
        raise StagingError(f"kubernetes staging is not available{detail}") from exc
    with provision_kubernetes(scenario, options) as staged:
        yield staged


def validate_url(url: str, option: str = "target URL") -> str:
    """``url`` without a trailing slash; InputError (exit 2) unless it is a plain http(s) URL.

    ``option`` names it in messages (``--baseline-target``); its password is never shown.
    """
    try:
        parts = urllib.parse.urlsplit(url.strip())
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        why = redact_text(str(exc), [url_password(url) or ""])
        raise InputError(f"{option} {redact_url(url)!r} is malformed: {why}") from exc
    if parts.scheme not in ("http", "https"):
        raise InputError(f"{option} {redact_url(url)!r} must start with http:// or https://")
    if not parts.hostname:
        raise InputError(f"{option} {redact_url(url)!r} has no host")
    if parts.query or parts.fragment:
        raise InputError(f"{option} {redact_url(url)!r} must not have a query or fragment")
    return urllib.parse.urlunsplit(parts).rstrip("/")


def probe_url(url: str, *, timeout_s: float, path: str = "") -> str | None:
    """GET ``url + path`` until anything answers or ``timeout_s`` passes; None, or why not."""
    import httpx  # here, not at the top: `perfgate validate` stays quick to start

    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    with httpx.Client(timeout=min(2.0, timeout_s), follow_redirects=False, verify=True) as client:
        while True:
            try:
                client.get(url + path)
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
            else:
                return None  # any HTTP answer, even 404 or 500, means something is there
            if time.monotonic() + _PROBE_INTERVAL_S >= deadline:
                return reason
            time.sleep(_PROBE_INTERVAL_S)


def probe_target(url: str, what: str = "target") -> None:
    """TargetUnreachable (exit 3) unless something answers HTTP at ``url`` within 5 s."""
    why = probe_url(url, timeout_s=PROBE_TIMEOUT_S)
    if why is not None:
        raise TargetUnreachable(
            f"{what} {redact_url(url)} did not answer within {PROBE_TIMEOUT_S:g} s "
            f"({why.splitlines()[0]})"
        )


@contextlib.contextmanager
def _provision_none(target: str, options: StagingOptions) -> Iterator[StagedTarget]:
    url = validate_url(target)
    shown = redact_url(url)
    options.log(f"probing existing target {shown}")
    probe_target(url)
    yield StagedTarget(url=url, provider="none", description=f"existing target {shown}")


@contextlib.contextmanager
def load_generators(
    scenario: Scenario,
    staged: StagedTarget,
    options: StagingOptions,
    *,
    documents: Sequence[Mapping[str, Any]],
    master: tuple[str, int],
) -> Iterator[tuple[str, int]]:
    """Create the load stage's generator objects in the namespace; yield ``master``'s address.

    ``documents`` are Kubernetes objects without a namespace (the load stage builds them: staging
    only places and applies them); ``master`` is (a Deployment among them, a port of its pod),
    yielded as a local address through a port-forward. They go with the namespace.
    """
    from perfgate.staging.kubernetes import deploy_load_generators

    with deploy_load_generators(
        scenario, staged, options, documents=documents, master=master
    ) as address:
        yield address
