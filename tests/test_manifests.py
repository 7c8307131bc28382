"""Offline manifest rendering and validation (perfgate.staging.manifests): no cluster, no HTTP."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from perfgate.errors import ScenarioError
from perfgate.models import KubernetesSpec
from perfgate.staging.manifests import (
    RenderedDoc,
    manifest_files,
    render_manifests,
    render_url,
    validate_manifests,
)

REPO = Path(__file__).resolve().parent.parent

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {release: "{{ release }}"}
spec:
  replicas: {{ replicas }}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: "{{ image }}"
          ports: [{containerPort: 8080}]
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 8080}]
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_for(*paths: Path, **kw: Any) -> KubernetesSpec:
    kw.setdefault("service", "web")
    kw.setdefault("port", 8080)
    kw.setdefault("image", "registry.example/web:{{ release }}")
    kw.setdefault("variables", {"replicas": 2})
    return KubernetesSpec(manifests=tuple(str(p) for p in paths), **kw)


def render(spec: KubernetesSpec, tmp_path: Path, **kw: Any) -> tuple[RenderedDoc, ...]:
    kw.setdefault("release", "v1.4")
    kw.setdefault("namespace", "perfgate-web-v1-4-abc")
    return render_manifests(spec, scenario_dir=tmp_path, **kw)


def test_renders_release_namespace_image_and_variables(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", DEPLOYMENT + "---\n" + SERVICE)
    docs = render(spec_for(path), tmp_path)
    assert [(d.kind, d.name, d.index) for d in docs] == [
        ("Deployment", "web", 1),
        ("Service", "web", 2),
    ]
    deploy = docs[0].obj
    assert deploy["metadata"]["labels"] == {"release": "v1.4"}
    assert deploy["metadata"]["namespace"] == "perfgate-web-v1-4-abc"
    assert docs[1].obj["metadata"]["namespace"] == "perfgate-web-v1-4-abc"
    assert deploy["spec"]["replicas"] == 2
    # the image is itself a template
    assert (
        deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/web:v1.4"
    )
    assert docs[0].file == "app.yaml"
    assert docs[0].where == "app.yaml[doc 1] Deployment/web"


def test_undefined_variable_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", DEPLOYMENT)
    with pytest.raises(
        ScenarioError, match=r"app\.yaml: line \d+: template error: 'replicas' is undefined"
    ):
        render(spec_for(path, variables={}), tmp_path)


def test_missing_image_hints_at_the_scenario_key(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", DEPLOYMENT)
    with pytest.raises(
        ScenarioError, match=r"'image' is undefined \(set staging\.kubernetes\.image\)"
    ):
        render(spec_for(path, image=None), tmp_path)


def test_reserved_variable_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", SERVICE)
    with pytest.raises(ScenarioError, match=r"variables\.namespace: reserved name"):
        render(spec_for(path, variables={"namespace": "prod"}), tmp_path)


def test_templates_are_sandboxed(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", "data: {{ ''.__class__.__mro__ }}\n")
    with pytest.raises(ScenarioError, match=r"app\.yaml: .*template error"):
        render(spec_for(path), tmp_path)


def test_folders_are_read_one_level_deep_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "k8s"
    (folder / "nested").mkdir(parents=True)
    write(folder, "20-service.yml", SERVICE)
    write(folder, "10-deploy.yaml", DEPLOYMENT)
    write(folder, "README.md", "not a manifest")
    write(folder, ".hidden.yaml", "garbage: [")
    write(folder / "nested", "ignored.yaml", "garbage: [")
    files = manifest_files([str(folder)])
    assert [f.name for f in files] == ["10-deploy.yaml", "20-service.yml"]
    docs = render(spec_for(folder), tmp_path)
    assert [d.file for d in docs] == ["k8s/10-deploy.yaml", "k8s/20-service.yml"]


def test_missing_or_empty_manifest_paths(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: no such manifest file or folder"):
        manifest_files([str(tmp_path / "nope.yaml")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenarioError, match=r"no \*\.yaml, \*\.yml or \*\.json manifests"):
        manifest_files([str(tmp_path / "empty")])


def test_empty_documents_and_lists(tmp_path: Path) -> None:
    as_list = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(SERVICE)]}
    )
    path = write(tmp_path, "app.yaml", "---\n---\n" + as_list + "---\n")
    docs = render(spec_for(path), tmp_path)
    assert [(d.kind, d.index) for d in docs] == [("Service", 2)]  # the first --- opens doc 1


def test_yaml_errors_name_file_document_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", SERVICE + "---\nkind: Service\nmetadata: name: x\n")
    with pytest.raises(
        ScenarioError, match=r"bad\.yaml\[doc 2\]: line 9: invalid YAML: mapping values"
    ):
        render(spec_for(path), tmp_path)


def test_structural_errors_are_all_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """\
        - just a list
        ---
        kind: ConfigMap
        metadata: {name: x}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {generateName: x-}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: sneaky}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: other, namespace: production}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {ports: [{port: 8080}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec: {ports: [{port: 8080}]}
        """,
    )
    with pytest.raises(ScenarioError) as info:
        render(spec_for(path), tmp_path)
    message = str(info.value)
    assert message.startswith("6 manifest errors: ")
    assert "bad.yaml[doc 1]: expected a mapping, got list" in message
    assert "bad.yaml[doc 2]: missing apiVersion" in message
    assert "bad.yaml[doc 3] ConfigMap/?: metadata.name is required" in message
    assert (
        "bad.yaml[doc 4] Namespace/sneaky: cluster-scoped kind Namespace is not allowed" in message
    )
    assert "bad.yaml[doc 5] ConfigMap/other: metadata.namespace 'production'" in message
    assert "bad.yaml[doc 7] Service/web: duplicate object, first in bad.yaml[doc 6]" in message
    assert "\n" not in message


def test_the_staging_namespace_may_be_written_explicitly(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: '{{ namespace }}'}\n",
    )
    (doc,) = render(spec_for(path), tmp_path)
    assert doc.obj["metadata"]["namespace"] == "perfgate-web-v1-4-abc"


def test_valid_manifests_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", DEPLOYMENT + "---\n" + SERVICE)
    assert validate_manifests(spec_for(path), scenario_dir=tmp_path) == ()


def test_validation_lists_every_error_with_file_and_document(tmp_path: Path) -> None:
    write(
        tmp_path,
        "a.yaml",
        """\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          replicas: two
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
                - name: web
                  image: web:1
                  ports: [{containerPort: 8080, protocl: TCP}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web}
        spec:
          selector: {app: web}
          ports: [{port: 8080}]
        """,
    )
    write(
        tmp_path,
        "b.yaml",
        """\
        apiVersion: batch/v1
        kind: Job
        metadata: {name: seed}
        spec:
          template:
            spec:
              containers: [{name: seed, image: seed:1}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: other}
        spec:
          selector: {matchLabels: {app: other}}
          template:
            metadata: {labels: {app: different}}
            spec: {containers: [{name: c}]}
        """,
    )
    spec = spec_for(tmp_path / "a.yaml", tmp_path / "b.yaml")
    errors = validate_manifests(spec, scenario_dir=tmp_path)
    assert "a.yaml[doc 1] Deployment/web: spec: 'selector' is a required property" in errors
    assert (
        "a.yaml[doc 1] Deployment/web: spec.replicas: 'two' is not of type 'integer', 'null'"
        in errors
    )
    assert any(
        e.startswith("a.yaml[doc 1] Deployment/web: spec.template.spec.containers[0].ports[0]: ")
        and "protocl" in e
        for e in errors
    )
    assert (
        "b.yaml[doc 1] Job/seed: spec.template.spec.restartPolicy: a Job needs Never or OnFailure"
        in errors
    )
    assert any(
        e.startswith("b.yaml[doc 2] Deployment/other: spec.selector.matchLabels does not match")
        for e in errors
    )
    assert (
        "b.yaml[doc 2] Deployment/other: spec.template.spec.containers[0].image: required" in errors
    )
    assert len(errors) == 6, errors
    # lenient mode lets the misspelt field through (the API server would silently drop it)
    lenient = validate_manifests(spec, scenario_dir=tmp_path, strict=False)
    assert len(lenient) == 5 and not any("protocl" in e for e in lenient)


def test_removed_api_versions_are_errors_but_custom_resources_are_not(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x.yaml",
        """\
        apiVersion: extensions/v1beta1
        kind: Deployment
        metadata: {name: old}
        spec: {}
        ---
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w}
        spec: {size: 3}
        """,
    )
    errors = validate_manifests(spec_for(path, service="", url="http://x"), scenario_dir=tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith(
        "x.yaml[doc 1] Deployment/old: apiVersion extensions/v1beta1 has no kind Deployment"
    )


def test_the_scenario_service_and_port_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, "app.yaml", DEPLOYMENT + "---\n" + SERVICE)
    missing = validate_manifests(spec_for(path, service="api"), scenario_dir=tmp_path)
    assert missing == (
        "staging.kubernetes.service: no Service named 'api' in the manifests "
        "(or set staging.kubernetes.url)",
    )
    wrong_port = validate_manifests(spec_for(path, port=9090), scenario_dir=tmp_path)
    assert wrong_port == (
        "app.yaml[doc 2] Service/web: has no port 9090 (staging.kubernetes.port); ports: 8080",
    )
    # with a URL template the service is not where the load goes
    assert (
        validate_manifests(spec_for(path, service="api", url="http://x"), scenario_dir=tmp_path)
        == ()
    )


def test_render_url(tmp_path: Path) -> None:
    spec = spec_for(
        url="http://{{ namespace }}.staging.example.com:{{ port }}/", variables={"zone": "eu"}
    )
    assert (
        render_url(spec, release="v1", namespace="perfgate-x-v1-a")
        == "http://perfgate-x-v1-a.staging.example.com:8080"
    )
    with pytest.raises(
        ScenarioError, match=r"staging\.kubernetes\.url: rendered to 'ftp://x', not an http"
    ):
        render_url(spec_for(url="ftp://x"), release="v1", namespace="n")
    with pytest.raises(ScenarioError, match=r"staging\.kubernetes\.url: .*'nope' is undefined"):
        render_url(spec_for(url="http://{{ nope }}"), release="v1", namespace="n")


def test_example_exchange_manifests_are_valid() -> None:
    scenario = yaml.safe_load((REPO / "scenarios/exchange-k8s.yaml").read_text(encoding="utf-8"))
    kube = scenario["staging"]["kubernetes"]
    spec = KubernetesSpec(
        manifests=tuple(str(REPO / "scenarios" / m) for m in kube["manifests"]),
        service=kube["service"],
        port=kube["port"],
        image=kube.get("image"),
        variables=kube.get("variables") or {},
    )
    assert validate_manifests(spec, scenario_dir=REPO / "scenarios") == ()
    docs = render_manifests(
        spec, release="v2.0.0", namespace="perfgate-exchange-v2-0-0-abc123", scenario_dir=REPO
    )
    kinds = {d.kind for d in docs}
    assert {"ConfigMap", "Deployment", "Service"} <= kinds
    deploy = next(d.obj for d in docs if d.kind == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert "v2.0.0" in container["image"]
