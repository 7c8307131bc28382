"""Cluster credentials, found like kubectl finds them, and kept out of every message.

``--kubeconfig``, else ``$KUBECONFIG`` (a path list), else ``~/.kube/config``, else the pod's
service account when ``KUBERNETES_SERVICE_HOST`` is set; ``--context`` picks a context. No usable
kubeconfig is bad input (exit 2). The official client is imported only when a function runs.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfgate.errors import InputError

__all__ = ["ClusterConfig", "load_cluster_config", "safe_url", "scrub"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """Where and as whom to talk to the API server."""

    configuration: Any = field(repr=False)  # kubernetes.client.Configuration (holds credentials)
    server: str  # API server URL, without credentials
    context: str  # kubeconfig context name, or "in-cluster"
    source: str  # the kubeconfig path(s), or "in-cluster service account"
    in_cluster: bool = False


def load_cluster_config(kubeconfig: str | None, context: str | None) -> ClusterConfig:
    """Load credentials like kubectl; every problem is an InputError naming the file."""
    import kubernetes
    import yaml

    env_list = os.environ.get("KUBECONFIG", "")
    if kubeconfig:
        files = [Path(kubeconfig).expanduser()]
        if not files[0].is_file():
            raise InputError(f"kubeconfig {kubeconfig}: no such file")
    elif env_list:
        listed = [Path(p).expanduser() for p in env_list.split(os.pathsep) if p]
        files = [p for p in listed if p.is_file()]
        if not files:
            raise InputError(f"KUBECONFIG={env_list}: no such file")
    elif Path("~/.kube/config").expanduser().is_file():
        files = [Path("~/.kube/config").expanduser()]
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster_config(context)
    else:
        raise InputError(
            "no kubeconfig: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, "
            "or run inside a pod with a service account"
        )
    shown = os.pathsep.join(str(p) for p in files)
    for path in files:
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise InputError(f"kubeconfig {path}: cannot read: {exc.strerror or exc}") from exc
    cfg = kubernetes.client.Configuration()
    try:
        contexts, active = kubernetes.config.list_kube_config_contexts(config_file=shown)
        names = [c.get("name") for c in contexts or () if isinstance(c, dict)]
        if context and context not in names:
            raise InputError(
                f"kubeconfig {shown}: no context {context!r} "
                f"(contexts: {', '.join(map(str, names)) or 'none'})"
            )
        chosen = context or (active or {}).get("name") or ""
        kubernetes.config.load_kube_config(
            config_file=shown, context=context, client_configuration=cfg, persist_config=False
        )
    except InputError:
        raise
    except kubernetes.config.ConfigException as exc:
        raise InputError(f"kubeconfig {shown}: {scrub(str(exc), cfg)}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"kubeconfig {shown}: not valid YAML") from exc
    except OSError as exc:
        raise InputError(f"kubeconfig {shown}: {exc.strerror or exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # the loader indexes the YAML blindly: a malformed file surfaces as these
        raise InputError(f"kubeconfig {shown}: malformed ({type(exc).__name__})") from exc
    if not cfg.host:
        raise InputError(f"kubeconfig {shown}: context {chosen!r} names no server")
    return ClusterConfig(
        configuration=cfg, server=safe_url(cfg.host), context=chosen or "?", source=shown
    )


def _in_cluster_config(context: str | None) -> ClusterConfig:
    import kubernetes

    if context:
        raise InputError(f"--context {context}: there is no kubeconfig (in-cluster config only)")
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException as exc:
        raise InputError(f"in-cluster config (service account of this pod): {exc}") from exc
    except OSError as exc:
        raise InputError(f"in-cluster config: {exc.strerror or exc}") from exc
    return ClusterConfig(
        configuration=cfg,
        server=safe_url(cfg.host),
        context="in-cluster",
        source="in-cluster service account",
        in_cluster=True,
    )


def safe_url(url: str) -> str:
    """``url`` without user and password, for messages and the report."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def scrub(text: str, cfg: Any) -> str:
    """``text`` without any credential the configuration holds."""
    secrets: list[str] = []
    for value in (getattr(cfg, "api_key", None) or {}).values():
        if isinstance(value, str):
            secrets.extend(value.split())
    for attr in ("password", "username"):
        value = getattr(cfg, attr, None)
        if isinstance(value, str) and value:
            secrets.append(value)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4 and secret.lower() != "bearer":
            text = text.replace(secret, "***")
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
