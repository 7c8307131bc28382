"""The REST layer: the one place that talks HTTP to the API server and translates its errors.

Requests go through the official client (its auth, TLS, proxies and exec plugins) as plain dicts.
The API server unreachable or refusing (401/403/5xx) is a :class:`~perfgate.errors.StagingError`
naming the server and the action; callers turn a rejected manifest (400/422) into a
:class:`~perfgate.errors.ScenarioError`. Credentials never appear in a message.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Sequence
from typing import Any

from perfgate.errors import ScenarioError, StagingError
from perfgate.staging.kubernetes import timing
from perfgate.staging.kubernetes.config import ClusterConfig, scrub

__all__ = ["MAX_REASON", "Api", "ApiError", "list_items", "transport_reason"]

MAX_REASON = 160  # characters of a server's or pod's reason quoted in one message line


class ApiError(StagingError):
    """The API server answered with an error status."""

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # Status.reason, e.g. AlreadyExists, NotFound, Forbidden


class Api:
    """Plain-dict REST calls through the official client (auth, TLS, proxies, exec plugins)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        import kubernetes

        self.cluster = cluster
        self.server = cluster.server
        self.client = kubernetes.client.ApiClient(cluster.configuration)
        from perfgate import __version__

        self.client.user_agent = f"perfgate/{__version__}"
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        action: str,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str = "application/json",
        allow: tuple[int, ...] = (),
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON). Statuses in ``allow`` don't raise."""
        import kubernetes
        import pydantic
        import urllib3

        headers = {"Accept": "application/json", "Content-Type": content_type}
        waits = timing.TIMING
        try:
            with warnings.catch_warnings():
                # insecure-skip-tls-verify is the kubeconfig's choice; kubectl does not nag either
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                response, raw = self._send(method, path, query, headers, body, waits)
        except kubernetes.client.ApiException as exc:  # status 0: the transport failed
            raise self._unreachable(action, exc.reason or str(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unreachable(action, str(exc)) from exc
        except (pydantic.ValidationError, kubernetes.config.ConfigException) as exc:
            raise StagingError(
                f"{action} on {self.server}: client error: "
                f"{scrub(str(exc), self.cluster.configuration)[:MAX_REASON]}"
            ) from exc
        status = int(response.status)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if 200 <= status < 300 or status in allow:
            if data is None and 200 <= status < 300 and method != "DELETE":
                raise StagingError(f"{action} on {self.server}: the answer is not JSON")
            return status, data
        raise self._status_error(action, status, response.reason, data)

    def _send(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, Any]],
        headers: dict[str, str],
        body: Any,
        waits: timing.Timing,
    ) -> tuple[Any, bytes]:
        method_, url, hdrs, body_, post = self.client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(
            method_,
            url,
            header_params=hdrs,
            body=body_,
            post_params=post,
            _request_timeout=(waits.connect_timeout_s, waits.read_timeout_s),
        )
        return response, response.read()

    def _unreachable(self, action: str, detail: str) -> StagingError:
        return StagingError(
            f"{action} on {self.server}: cannot reach the API server ({transport_reason(detail)})"
        )

    def _status_error(self, action: str, status: int, phrase: Any, data: Any) -> ApiError:
        reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
        message = str(data.get("message", "")) if isinstance(data, dict) else ""
        line = f"{action} on {self.server}: {status} {phrase or ''}".rstrip()
        if message and message.lower() != str(phrase).lower():
            line += f": {scrub(message, self.cluster.configuration)[:300]}"
        if status == 401:
            line += " (the credentials were rejected: check the kubeconfig user)"
        return ApiError(line, status=status, reason=reason)

    # -- discovery --------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str, *, where: str) -> tuple[str, str, bool]:
        """(path prefix, plural, namespaced) of a kind, found through API discovery."""
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        known = self._resources.get(api_version)
        if known is None:
            status, data = self.request(
                "GET", prefix, action=f"discovering {api_version}", allow=(404,)
            )
            known = {}
            if status == 200 and isinstance(data, dict):
                for r in data.get("resources") or ():
                    if isinstance(r, dict) and "/" not in str(r.get("name", "")):
                        known[str(r.get("kind"))] = (str(r["name"]), bool(r.get("namespaced")))
            self._resources[api_version] = known
        if kind not in known:
            raise ScenarioError(
                f"{where}: the cluster at {self.server} does not serve {kind} in {api_version}"
            )
        plural, namespaced = known[kind]
        return prefix, plural, namespaced


def transport_reason(detail: str) -> str:
    """A transport failure in a few words (the client's messages run to several lines)."""
    text = detail.replace("\n", " ")
    for pattern, reason in (
        (r"(?i)connection refused", "connection refused"),
        (r"(?i)timed? ?out", "timed out"),
        (r"(?i)name or service not known|nodename nor servname|getaddrinfo failed", "unknown host"),
        (r"(?i)certificate verify failed|CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        (r"(?i)no route to host", "no route to host"),
        (r"(?i)network is unreachable", "network unreachable"),
        (r"(?i)connection reset", "connection reset"),
        (r"(?i)remote ?disconnected|connection aborted", "connection closed by the server"),
    ):
        if re.search(pattern, text):
            return reason
    return text[:MAX_REASON] or "no answer"


def list_items(
    api: Api, path: str, *, action: str, query: Sequence[tuple[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The objects of a list answer (``items``), anything that is not an object skipped."""
    _, data = api.request("GET", path, action=action, query=query)
    items = (data or {}).get("items") if isinstance(data, dict) else None
    return [i for i in items or () if isinstance(i, dict)]
