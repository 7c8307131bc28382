"""Prometheus: the text exposition format (what the exchange serves) and the HTTP query API.

:class:`PrometheusSampler` evaluates the scenario's named queries (``metrics.prometheus``) at
every sample through ``/api/v1/query``; each query's result is charted against users, and a query
with a ``limit`` is judged like any resource. :func:`check_queries` is ``perfgate validate``'s
syntax check against the server (offline when it does not answer).
"""

from __future__ import annotations

import math
import re
import urllib.parse
from typing import Any

import httpx

from perfgate.models import PrometheusSpec, PromQuery, ResourceReading
from perfgate.telemetry.base import Snapshots, Summary, Unavailable, mean_in, series

TIMEOUT_S = 2.0
MAX_SERIES = 5  # series charted per query (the largest); the rest are summed into "other"

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Key = tuple[str, tuple[tuple[str, str], ...]]


def parse_text(text: str) -> dict[Key, float]:
    """Samples of a text exposition: (metric name, sorted labels) → value. Comments skipped."""
    out: dict[Key, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if m is None:
            continue
        name, labels, raw = m.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        pairs = tuple(
            sorted(
                (k, v.replace('\\"', '"').replace("\\\\", "\\"))
                for k, v in _LABEL.findall(labels or "")
            )
        )
        out[(name, pairs)] = value
    return out


def shown_url(url: str) -> str:
    """``url`` as messages show it: a password in it replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def render_query(query: PromQuery, namespace: str) -> str:
    return re.sub(r"{{\s*namespace\s*}}", namespace, query.query)


class PrometheusSampler:
    """The scenario's named PromQL queries, evaluated now at every sample."""

    def __init__(self, spec: PrometheusSpec, *, namespace: str = "") -> None:
        self.spec = spec
        self.namespace = namespace
        self.label = f"Prometheus at {shown_url(spec.url)}"
        self.client = httpx.Client(timeout=TIMEOUT_S, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def sample(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for q in self.spec.queries:
            for labels, value in self._query(render_query(q, self.namespace)):
                out[(q.name, labels)] = value
        return out

    def _query(self, promql: str) -> list[tuple[str, float]]:
        try:
            response = self.client.get(f"{self.spec.url}/api/v1/query", params={"query": promql})
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"{self.label} did not answer ({type(exc).__name__})") from exc
        if not isinstance(data, dict) or data.get("status") != "success":
            error = data.get("error") if isinstance(data, dict) else None
            raise Unavailable(f"{self.label}: {error or f'HTTP {response.status_code}'}")
        result = data.get("data") or {}
        kind, items = result.get("resultType"), result.get("result")
        if kind == "scalar" and isinstance(items, list):
            return [("", _value(items))]
        out = []
        for item in items if isinstance(items, list) else ():
            metric = item.get("metric") or {}
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
            out.append((labels, _value(item.get("value"))))
        return [(k, v) for k, v in out if math.isfinite(v)]

    def summarise(self, snaps: Snapshots, t0: float, t1: float) -> Summary:
        readings, missing = [], []
        for q in self.spec.queries:
            keys = sorted({k for _, s in snaps for k in s if k[0] == q.name})
            if not keys:
                missing.append(f"{self.label}: query {q.name} returned no series")
                continue
            means = [(k[1], mean_in(series(snaps, k), t0, t1)) for k in keys]
            values = sorted(((v, lab) for lab, v in means if v is not None), reverse=True)
            for value, labels in values[:MAX_SERIES]:
                name = q.name if len(values) == 1 else f"{q.name} {{{labels}}}"
                util = value / q.limit if q.limit else None
                readings.append(
                    ResourceReading(
                        name=name,
                        source="prometheus",
                        kind="value",
                        value=value,
                        unit=q.unit,
                        limit=q.limit,
                        utilisation=util,
                    )
                )
        return Summary(readings=tuple(readings), missing=tuple(missing))


def _value(pair: Any) -> float:
    try:
        return float(pair[1])
    except (TypeError, ValueError, IndexError):
        return float("nan")


def check_queries(spec: PrometheusSpec, *, timeout_s: float = TIMEOUT_S) -> tuple[list[str], str]:
    """Problems the server's parser finds in the queries, and how they were checked.

    Returns (problems, how): ``how`` says whether the server checked them or it did not answer
    (then only the offline check of the scenario reader ran).
    """
    problems = []
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        for q in spec.queries:
            promql = render_query(q, "namespace")
            try:
                response = client.get(f"{spec.url}/api/v1/format_query", params={"query": promql})
                data = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                shown = shown_url(spec.url)
                return [], f"offline only: {shown} did not answer ({type(exc).__name__})"
            if response.status_code == 404:  # before Prometheus 2.38: parse by evaluating
                response = client.get(f"{spec.url}/api/v1/query", params={"query": promql})
                data = response.json()
            if isinstance(data, dict) and data.get("errorType") == "bad_data":
                problems.append(f"metrics.prometheus.queries.{q.name}: {data.get('error')}")
    return problems, f"checked by the server at {shown_url(spec.url)}"
