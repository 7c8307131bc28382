"""Kubernetes manifests: collect, render (jinja2), parse and check them offline.

No cluster is touched here (this module never imports ``kubernetes``): ``perfgate validate`` and
the kubernetes provider both call :func:`validate_manifests` / :func:`render_manifests` before a
single object is created, so a typo costs seconds instead of a namespace.

Manifests are files or folders (``*.yaml``, ``*.yml``, ``*.json`` directly inside, sorted by name,
not recursive, like ``kubectl apply -f DIR``) of multi-document YAML. Each file is first rendered
as a jinja2 template with ``release``, ``namespace``, ``image`` and the scenario's ``variables``;
an undefined name is an error that names the file and line. Documents are numbered from 1 in
every message (``exchange.yaml[doc 2] Deployment/exchange: …``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.exceptions
import jinja2.sandbox
import yaml

from perfgate.errors import ScenarioError
from perfgate.models import KubernetesSpec

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_MANIFEST_BYTES = 4 << 20
RESERVED_VARIABLES = ("release", "namespace", "image")
VALIDATE_RELEASE = "validate"
VALIDATE_NAMESPACE = "perfgate-validate"

# Kinds that live outside any namespace: they would outlive the staging namespace (a leak) and
# need cluster-admin rights, so perfgate refuses them instead of applying them.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ComponentStatus",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)
# API groups whose kinds kubernetes-validate knows; a kind of another group is a custom resource.
_BUILTIN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "node.k8s.io",
        "certificates.k8s.io",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "resource.k8s.io",
        "extensions",
    }
)
_WORKLOADS_WITH_TEMPLATE = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
_MAX_MESSAGE = 240


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedDoc:
    """One rendered Kubernetes object and where it came from (``index`` counts from 1)."""

    file: str
    index: int
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", "?"))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata")
        return str(meta.get("name", "?")) if isinstance(meta, dict) else "?"

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def where(self) -> str:
        """``file[doc N] Kind/name``, the prefix of every message about this object."""
        return f"{self.file}[doc {self.index}] {self.kind}/{self.name}"


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def render_manifests(
    spec: KubernetesSpec,
    *,
    release: str,
    namespace: str,
    scenario_dir: Path,
    image: str | None = None,
) -> tuple[RenderedDoc, ...]:
    """Render every manifest for ``namespace``; raise ScenarioError listing all problems.

    ``image``, already rendered, replaces ``staging.kubernetes.image``: how a previous release is
    staged from its recipe with the same manifests.
    """
    docs, errors = _render_all(
        spec, release=release, namespace=namespace, scenario_dir=scenario_dir, image=image
    )
    if errors:
        raise ScenarioError(_summary(errors))
    return docs


def validate_manifests(
    spec: KubernetesSpec,
    *,
    scenario_dir: Path,
    strict: bool = True,
    kube_version: str | None = None,
) -> tuple[str, ...]:
    """Render and check the manifests offline; every error as ``file[doc N] Kind/name: message``.

    ``strict`` also rejects unknown fields (a misspelt ``protocl`` passes a lenient schema check
    and is then silently dropped by the API server). An empty tuple means the manifests are fine.
    """
    docs, errors = _render_all(
        spec, release=VALIDATE_RELEASE, namespace=VALIDATE_NAMESPACE, scenario_dir=scenario_dir
    )
    return tuple(errors) + check_documents(docs, spec, strict=strict, kube_version=kube_version)


def check_documents(
    docs: Sequence[RenderedDoc],
    spec: KubernetesSpec,
    *,
    strict: bool = True,
    kube_version: str | None = None,
) -> tuple[str, ...]:
    """Schema and semantic checks of already rendered documents (no cluster needed)."""
    errors: list[str] = []
    for doc in docs:
        errors.extend(f"{doc.where}: {msg}" for msg in _schema_errors(doc, strict, kube_version))
        errors.extend(f"{doc.where}: {msg}" for msg in _semantic_errors(doc.obj))
    if not spec.url and spec.service:
        errors.extend(_service_errors(docs, spec))
    return tuple(errors)


def render_url(
    spec: KubernetesSpec, *, release: str, namespace: str, image: str | None = None
) -> str:
    """Render ``staging.kubernetes.url`` (a template) into the target URL."""
    if not spec.url:
        raise ScenarioError("staging.kubernetes.url is not set")
    context = _context(spec, release=release, namespace=namespace, image=image)
    context.update(service=spec.service, port=spec.port)
    try:
        url = _render(spec.url, context).strip()
    except jinja2.TemplateError as exc:
        raise ScenarioError(f"staging.kubernetes.url: {_jinja_message(exc)}") from exc
    if not re.match(r"^https?://[^/\s]+", url):
        raise ScenarioError(f"staging.kubernetes.url: rendered to {url!r}, not an http(s) URL")
    return url.rstrip("/")


def render_image(spec: KubernetesSpec, *, release: str, namespace: str) -> str | None:
    """``staging.kubernetes.image`` rendered as the manifests see it (None when unset)."""
    image = _context(spec, release=release, namespace=namespace).get("image")
    return str(image) if image is not None else None


def manifests_digest(spec: KubernetesSpec) -> str:
    """``sha256:<hex>`` of the raw manifest files' bytes, in path order.

    It says whether a stored release was staged from the same manifests as this run (the same
    as ``cat FILES | sha256sum`` with the files sorted by path).
    """
    digest = hashlib.sha256()
    for path in sorted(manifest_files(spec.manifests), key=str):
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return f"sha256:{digest.hexdigest()}"


def reserved_name_errors(docs: Sequence[RenderedDoc], prefix: str) -> tuple[str, ...]:
    """Manifests whose names start with ``prefix``, reserved for perfgate's load generators.

    The prefix comes from the caller (the load stage owns the names it gives its pods), so that
    a clash is reported with the other manifest errors, before any cluster is touched.
    """
    return tuple(
        f"{doc.where}: the name prefix {prefix!r} is reserved for perfgate's load "
        "generators (load.placement kubernetes)"
        for doc in docs
        if doc.name.startswith(prefix)
    )


def manifest_files(paths: Iterable[str]) -> tuple[Path, ...]:
    """The manifest files named by ``paths`` (files, or folders scanned one level deep)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix in MANIFEST_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise ScenarioError(f"{raw}: no *.yaml, *.yml or *.json manifests in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ScenarioError(f"{raw}: no such manifest file or folder")
    unique = tuple(dict.fromkeys(files))  # a file named twice (folder + file) is applied once
    if not unique:
        raise ScenarioError("staging.kubernetes.manifests: no manifests given")
    return unique


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------


MAX_RENDER_ITEMS = 100_000  # range() items in all of one template's loops together
MAX_RENDER_BYTES = 4 << 20  # one rendered file; a manifest this big is a mistake or an attack
MAX_RENDER_S = 10.0  # the backstop for loops over anything else (nested loops over a variable)


class _BoundedEnvironment(jinja2.sandbox.SandboxedEnvironment):
    """Sandboxed (a template has no business reaching Python internals), StrictUndefined (a
    missing variable must fail, not render as ""), and bounded: one render may produce at most
    MAX_RENDER_ITEMS items from ``range`` and MAX_RENDER_BYTES of output, and may take at most
    MAX_RENDER_S (in the main thread), so ``perfgate validate`` cannot hang on nested loops."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
        )
        self.items = 0
        self.globals["range"] = self._range

    def _range(self, *args: int) -> range:
        numbers = jinja2.sandbox.safe_range(*args)
        self.items += len(numbers)
        if self.items > MAX_RENDER_ITEMS:
            raise jinja2.exceptions.SecurityError(
                f"the template's loops run more than {MAX_RENDER_ITEMS} times"
            )
        return numbers

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise jinja2.exceptions.SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
                if sized and len(seq) * n > MAX_RENDER_BYTES:
                    raise jinja2.exceptions.SecurityError("a repeated value is too large")
        return super().call_binop(context, operator, left, right)


def _render(text: str, context: dict[str, Any]) -> str:
    """``text`` rendered as a bounded template (SecurityError, a TemplateError, past a bound)."""
    template = _BoundedEnvironment().from_string(text)
    chunks: list[str] = []
    size = 0
    with _deadline(MAX_RENDER_S):
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_RENDER_BYTES:
                raise jinja2.exceptions.SecurityError(
                    f"renders to more than {MAX_RENDER_BYTES} characters"
                )
            chunks.append(chunk)
    return "".join(chunks)


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """SecurityError after ``seconds`` of rendering (SIGALRM: only in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise jinja2.exceptions.SecurityError(f"rendering took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _context(
    spec: KubernetesSpec, *, release: str, namespace: str, image: str | None = None
) -> dict[str, Any]:
    clash = sorted(set(spec.variables) & set(RESERVED_VARIABLES))
    if clash:
        raise ScenarioError(
            f"staging.kubernetes.variables.{clash[0]}: reserved name "
            f"(perfgate sets {', '.join(RESERVED_VARIABLES)}; use staging.kubernetes.image)"
        )
    context: dict[str, Any] = dict(spec.variables)
    context.update(release=release, namespace=namespace)
    if image is not None:
        context["image"] = image
    elif spec.image:
        try:
            context["image"] = _render(spec.image, context).strip()
        except jinja2.TemplateError as exc:
            raise ScenarioError(f"staging.kubernetes.image: {_jinja_message(exc)}") from exc
    return context


def _render_all(
    spec: KubernetesSpec,
    *,
    release: str,
    namespace: str,
    scenario_dir: Path,
    image: str | None = None,
) -> tuple[tuple[RenderedDoc, ...], list[str]]:
    context = _context(spec, release=release, namespace=namespace, image=image)
    docs: list[RenderedDoc] = []
    errors: list[str] = []
    for path in manifest_files(spec.manifests):
        shown = _display(path, scenario_dir)
        try:
            text = _read(path)
            rendered = _render(text, context)
        except ScenarioError as exc:
            errors.append(f"{shown}: {exc}")
            continue
        except jinja2.TemplateError as exc:
            hint = ""
            if isinstance(exc, jinja2.UndefinedError) and "'image'" in str(exc):
                hint = " (set staging.kubernetes.image)"
            errors.append(f"{shown}: {_jinja_message(exc)}{hint}")
            continue
        docs.extend(_parse(rendered, shown, namespace, errors))
    errors.extend(_duplicates(docs))
    return tuple(docs), errors


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ScenarioError(f"larger than {MAX_MANIFEST_BYTES >> 20} MiB")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError("not UTF-8 text") from exc
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror or exc}") from exc


def _parse(text: str, shown: str, namespace: str, errors: list[str]) -> list[RenderedDoc]:
    docs: list[RenderedDoc] = []
    index = 0
    try:
        for index, raw in enumerate(yaml.safe_load_all(text), start=1):
            if raw is None:  # an empty document (e.g. a trailing ---) is allowed, as in kubectl
                continue
            for obj in _expand_list(raw):
                doc, problem = _normalise(obj, shown, index, namespace)
                if problem:
                    errors.append(problem)
                else:
                    docs.append(doc)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(f"{shown}[doc {index + 1}]: {where}invalid YAML: {problem}")
    return docs


def _expand_list(raw: Any) -> list[Any]:
    # kubectl accepts `kind: List` (what `kubectl get -o yaml` prints); so do we
    if isinstance(raw, dict) and raw.get("kind") == "List" and isinstance(raw.get("items"), list):
        return list(raw["items"])
    return [raw]


def _normalise(obj: Any, shown: str, index: int, namespace: str) -> tuple[RenderedDoc, str | None]:
    empty = RenderedDoc(file=shown, index=index, obj={})
    if not isinstance(obj, dict):
        return empty, f"{shown}[doc {index}]: expected a mapping, got {type(obj).__name__}"
    missing = [k for k in ("apiVersion", "kind") if not isinstance(obj.get(k), str) or not obj[k]]
    if missing:
        return empty, f"{shown}[doc {index}]: missing {' and '.join(missing)}"
    meta = obj.get("metadata")
    doc = RenderedDoc(file=shown, index=index, obj=obj)
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        return doc, f"{doc.where}: metadata.name is required (generateName cannot be applied)"
    if obj["kind"] in CLUSTER_SCOPED_KINDS:
        return doc, (
            f"{doc.where}: cluster-scoped kind {obj['kind']} is not allowed "
            "(perfgate applies everything inside its own staging namespace, deleted afterwards)"
        )
    given = meta.get("namespace")
    if given not in (None, "", namespace):
        return doc, (
            f"{doc.where}: metadata.namespace {given!r} is not the staging namespace; "
            "remove it or write {{ namespace }}"
        )
    placed = dict(obj)
    placed["metadata"] = {**meta, "namespace": namespace}
    return RenderedDoc(file=shown, index=index, obj=placed), None


def _duplicates(docs: Sequence[RenderedDoc]) -> list[str]:
    seen: dict[tuple[str, str, str], RenderedDoc] = {}
    errors = []
    for doc in docs:
        key = (_group(doc.api_version), doc.kind, doc.name)
        if key in seen:
            first = seen[key]
            errors.append(
                f"{doc.where}: duplicate object, first in {first.file}[doc {first.index}]"
            )
        else:
            seen[key] = doc
    return errors


def _display(path: Path, scenario_dir: Path) -> str:
    for base in (scenario_dir, Path.cwd()):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _jinja_message(exc: jinja2.TemplateError) -> str:
    line = getattr(exc, "lineno", None) or _template_line(exc)
    where = f"line {line}: " if line else ""
    return f"{where}template error: {exc.message or exc}"


def _template_line(exc: BaseException) -> int | None:
    """The template line a render-time error came from (jinja2 maps its frames to it)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _summary(errors: Sequence[str]) -> str:
    if len(errors) == 1:
        return f"invalid manifest: {errors[0]}"
    return f"{len(errors)} manifest errors: " + "; ".join(errors)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _schema_errors(doc: RenderedDoc, strict: bool, kube_version: str | None) -> list[str]:
    import kubernetes_validate

    version = kube_version or kubernetes_validate.latest_version()
    try:
        validator = _validator(doc.kind, doc.api_version, version, strict)
    except kubernetes_validate.SchemaNotFoundError:
        if _group(doc.api_version) in _BUILTIN_GROUPS:
            return [
                f"apiVersion {doc.api_version} has no kind {doc.kind} in Kubernetes {version} "
                "(misspelt kind, or a removed API version?)"
            ]
        return []  # a custom resource: its schema lives in the cluster, not here
    except kubernetes_validate.utils.VersionNotSupportedError:
        return [f"kubernetes-validate has no schemas for Kubernetes {version}"]
    if validator is None:  # library internals changed: fall back to its one-error API
        try:
            kubernetes_validate.validate(doc.obj, version, strict=strict)
        except kubernetes_validate.ValidationError as exc:
            return [_schema_message(list(exc.path), exc.message)]
        return []
    found = sorted(validator.iter_errors(doc.obj), key=lambda e: [str(p) for p in e.path])
    return [_schema_message(list(e.path), e.message) for e in found]


@functools.lru_cache(maxsize=256)
def _validator(kind: str, api_version: str, version: str, strict: bool) -> Any:
    """A jsonschema validator for one kind, reporting every error (the library stops at one)."""
    import kubernetes_validate
    from kubernetes_validate import utils

    try:
        import jsonschema
        from referencing import Resource

        if utils.major_minor(version) > utils.latest_version():
            raise utils.VersionNotSupportedError(version=version)
        full = [
            v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(version)
        ]
        if not full:
            raise utils.VersionNotSupportedError(version=version)
        folder = f"v{full[-1]}-local" + ("-strict" if strict else "")
        group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        try:
            schema = utils.schema_contents(
                f"kubernetes-json-schema/{folder}/{kind.lower()}-{group_version}.json", version
            )
        except FileNotFoundError:
            raise kubernetes_validate.SchemaNotFoundError(
                version=version, kind=kind, api_version=api_version
            ) from None
        registry: Any = Resource.from_contents(schema) @ _definitions(folder, version)
        return jsonschema.validators.Draft202012Validator(schema, registry=registry)
    except (AttributeError, ImportError, TypeError):
        return None


@functools.cache
def _definitions(folder: str, version: str) -> Any:
    """The shared definitions of one schema folder (2 MB of JSON: read once)."""
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    defs = utils.schema_contents(f"kubernetes-json-schema/{folder}/_definitions.json", version)
    return Resource.from_contents(defs) @ Registry()


def _schema_message(path: list[Any], message: str) -> str:
    dotted = ""
    for part in path:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return f"{dotted}: {message}" if dotted else message


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _semantic_errors(obj: dict[str, Any]) -> list[str]:
    """Rules the API server enforces but a JSON schema cannot express (each gives a 422)."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    if kind not in _WORKLOADS_WITH_TEMPLATE or not isinstance(spec, dict):
        return []
    errors: list[str] = []
    template = _mapping(spec.get("template"))
    labels = _mapping(_mapping(template.get("metadata")).get("labels"))
    selector = spec.get("selector")
    if kind != "Job" and isinstance(selector, dict):
        match = selector.get("matchLabels")
        if isinstance(match, dict) and any(labels.get(k) != v for k, v in match.items()):
            errors.append(
                "spec.selector.matchLabels does not match spec.template.metadata.labels "
                "(the API server rejects this with 422)"
            )
    pod = _mapping(template.get("spec"))
    containers = pod.get("containers")
    if not isinstance(containers, list):
        containers = []
    for i, container in enumerate(containers):
        if isinstance(container, dict) and not container.get("image"):
            errors.append(f"spec.template.spec.containers[{i}].image: required")
    if kind == "Job" and pod.get("restartPolicy", "Always") not in ("Never", "OnFailure"):
        errors.append("spec.template.spec.restartPolicy: a Job needs Never or OnFailure")
    return errors


def _service_errors(docs: Sequence[RenderedDoc], spec: KubernetesSpec) -> list[str]:
    services = [d for d in docs if d.kind == "Service" and d.name == spec.service]
    if not services:
        return [
            f"staging.kubernetes.service: no Service named {spec.service!r} in the manifests "
            "(or set staging.kubernetes.url)"
        ]
    ports = services[0].obj.get("spec", {}).get("ports") or []
    numbers = [p.get("port") for p in ports if isinstance(p, dict)]
    if spec.port not in numbers:
        return [
            f"{services[0].where}: has no port {spec.port} (staging.kubernetes.port); "
            f"ports: {', '.join(str(n) for n in numbers) or 'none'}"
        ]
    return []
