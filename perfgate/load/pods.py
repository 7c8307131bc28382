"""The load generators as pods: what Locust's master and workers are when they run in a cluster.

The load stage owns what its generator is: the names, labels, command lines and resources of the
pods, and the objects that carry them (a ConfigMap and a Secret with :func:`pod_files`'s files,
the master's Service and Deployment, the workers' Deployment). They are plain dicts, without a
namespace: staging places them in its namespace and applies them as given
(:func:`perfgate.staging.load_generators`). Nothing here talks to a cluster.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from perfgate.errors import ScenarioError
from perfgate.load.protocol import CONTROL_PORT, MASTER_PORT
from perfgate.models import LoadSpec

__all__ = [
    "LOAD_CONFIG_NAME",
    "LOAD_MASTER_NAME",
    "LOAD_MOUNT_DIR",
    "LOAD_NAME_PREFIX",
    "LOAD_ROLE_LABEL",
    "LOAD_SECRET_NAME",
    "LOAD_WORKER_NAME",
    "load_commands",
    "load_generator_documents",
    "load_labels",
]

LOAD_CONFIG_NAME = "perfgate-locust-config"  # ConfigMap: config.json (+ locustfile.py)
LOAD_SECRET_NAME = "perfgate-locust-secrets"  # Secret: secrets.json, only when there are any
LOAD_MASTER_NAME = "perfgate-locust-master"  # Deployment and Service
LOAD_WORKER_NAME = "perfgate-locust-worker"  # Deployment
LOAD_NAME_PREFIX = "perfgate-locust-"  # reserved: the scenario's manifests must not use it
LOAD_ROLE_LABEL = "perfgate.dev/load-role"
LOAD_MOUNT_DIR = "/etc/perfgate/load"  # ConfigMap and Secret projected into one folder
LOAD_WORKER_RESOURCES = {
    # a worker is one Python process: it can use one core, and no CPU limit (CFS throttling
    # would show up as latency of the target)
    "requests": {"cpu": "500m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
LOAD_MASTER_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def load_labels(role: str | None = None) -> dict[str, str]:
    """Labels of every load-generator object (``role``: master or worker)."""
    labels = {
        "app.kubernetes.io/name": "perfgate-locust",
        "app.kubernetes.io/component": "load-generator",
        "app.kubernetes.io/managed-by": "perfgate",
    }
    if role:
        labels[LOAD_ROLE_LABEL] = role
    return labels


def load_commands() -> dict[str, list[str]]:
    """The engine command lines of the master and worker pods."""
    config = f"{LOAD_MOUNT_DIR}/config.json"
    engine = ["python", "-m", "perfgate.load.engine"]
    return {
        "master": [
            *engine,
            "--master",
            "--config",
            config,
            "--port",
            str(MASTER_PORT),
            "--control-port",
            str(CONTROL_PORT),
        ],
        "worker": [
            *engine,
            "--worker",
            LOAD_MASTER_NAME,  # the Service, same namespace
            str(MASTER_PORT),
            "--config",
            config,
        ],
    }


def load_generator_documents(
    load: LoadSpec, *, files: Mapping[str, str], secret_files: Mapping[str, str]
) -> tuple[dict[str, Any], ...]:
    """ConfigMap, Secret (if any), master Service and Deployment, worker Deployment.

    ``files`` and ``secret_files`` are :func:`perfgate.load.runner.pod_files`'s. The pods port
    :data:`~perfgate.load.protocol.CONTROL_PORT` of Deployment :data:`LOAD_MASTER_NAME` is where
    the runner's relay connects.
    """
    if not load.worker_image:
        raise ScenarioError("load.worker_image: required when load.placement is kubernetes")
    if load.workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {load.workers}")
    sources: list[dict[str, Any]] = [{"configMap": {"name": LOAD_CONFIG_NAME}}]
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(LOAD_CONFIG_NAME),
            "data": dict(files),
        }
    ]
    if secret_files:
        sources.append({"secret": {"name": LOAD_SECRET_NAME}})
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(LOAD_SECRET_NAME),
                "type": "Opaque",
                "data": {
                    k: base64.b64encode(v.encode("utf-8")).decode("ascii")
                    for k, v in secret_files.items()
                },
            }
        )
    objs.append(_master_service())
    objs.append(_deployment("master", 1, load.worker_image, sources))
    objs.append(_deployment("worker", load.workers, load.worker_image, sources))
    return tuple(objs)


def _meta(name: str, role: str | None = None) -> dict[str, Any]:
    return {"name": name, "labels": load_labels(role)}


def _selector(role: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "perfgate-locust", LOAD_ROLE_LABEL: role}


def _master_service() -> dict[str, Any]:
    """Where the worker pods reach the master (Locust's port; the control port stays private)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(LOAD_MASTER_NAME, "master"),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector("master"),
            "ports": [
                {"name": "locust", "port": MASTER_PORT, "targetPort": "locust", "protocol": "TCP"}
            ],
        },
    }


def _deployment(
    role: str, replicas: int, image: str, sources: list[dict[str, Any]]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": f"locust-{role}",
        "image": image,
        "command": load_commands()[role],
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},  # the mount is read-only
            {
                "name": "PERFGATE_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ],
        "resources": LOAD_MASTER_RESOURCES if role == "master" else LOAD_WORKER_RESOURCES,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "load", "mountPath": LOAD_MOUNT_DIR, "readOnly": True}],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # load generators never talk to the API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": [{"name": "load", "projected": {"sources": sources}}],
    }
    spec: dict[str, Any] = {
        "replicas": replicas,
        "strategy": {"type": "Recreate"},
        "selector": {"matchLabels": _selector(role)},
        "template": {"metadata": {"labels": load_labels(role)}, "spec": pod_spec},
    }
    if role == "master":
        container["ports"] = [{"name": "locust", "containerPort": MASTER_PORT, "protocol": "TCP"}]
        # the control port opens before Locust's: this probe covers both
        container["readinessProbe"] = {
            "tcpSocket": {"port": "locust"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        }
    else:
        # a worker that crashes on start (an image without perfgate) is not "available"
        spec["minReadySeconds"] = 5
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",  # spread over nodes where possible
                "labelSelector": {"matchLabels": _selector(role)},
            }
        ]
    name = LOAD_MASTER_NAME if role == "master" else LOAD_WORKER_NAME
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, role),
        "spec": spec,
    }
