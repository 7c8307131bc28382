"""``perfgate init``: a scenario for your own service, from its URL or its OpenAPI 3 document.

The generated file is plain scenario YAML with comments saying what to change; it is parsed and
its request templates compiled before it is written, so what ``init`` writes always validates.
With an OpenAPI document (JSON or YAML), every GET and POST operation becomes one weighted
request: path and required query parameters, and JSON bodies, take the document's own
``example``/``examples``/``default`` values (through local ``$ref``s), else a value of the
declared type. Reads weigh 3, writes 1: a starting mix to edit, not a traffic model.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from perfgate.errors import InputError, ScenarioError
from perfgate.load import templates
from perfgate.scenario import LOCAL_SCENARIO, load_yaml_file, parse_scenario
from perfgate.staging import validate_url

__all__ = ["Scaffold", "ci_snippet", "scaffold", "write_scaffold"]

WEIGHTS = {"get": 3, "post": 1}
MAX_DEPTH = 8  # nested schemas (and $ref chains) deeper than this get no example
_STRING_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "email": "user@example.com",
    "uuid": "00000000-0000-0000-0000-000000000001",
    "uri": "https://example.com/",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Scaffold:
    """A generated scenario: its YAML text, its name and how many requests it has."""

    text: str
    name: str
    requests: int


def scaffold(
    url: str,
    *,
    openapi: Path | None = None,
    name: str | None = None,
    output: Path = LOCAL_SCENARIO,
) -> Scaffold:
    """The scenario for ``url`` (one GET of its path, or the OpenAPI document's operations)."""
    base = validate_url(url, "URL")
    parts = urllib.parse.urlsplit(base)
    if parts.password:
        raise InputError("URL: leave the password out (headers can take ${VAR} secrets)")
    origin = f"{parts.scheme}://{parts.netloc}"
    prefix = parts.path.rstrip("/")
    if openapi is None:
        path = prefix or "/"
        requests = [{"name": f"GET {path}", "method": "GET", "path": path, "weight": 1}]
        source = f"`perfgate init {base}`"
    else:
        requests = openapi_requests(load_yaml_file(openapi, what="OpenAPI document"), prefix)
        source = f"`perfgate init {base} --openapi {openapi.name}`"
    scen_name = name or _name_from_host(parts.hostname or "service")
    text = _render(scen_name, origin, requests, source, output)
    try:
        scen = parse_scenario(text, source="the generated scenario", env={})
        templates.compile_requests(scen.users.requests)
    except (ScenarioError, ValueError) as exc:
        raise InputError(f"cannot write a valid scenario from this input: {exc}") from None
    return Scaffold(text=text, name=scen_name, requests=len(requests))


def write_scaffold(made: Scaffold, path: Path, *, force: bool = False) -> None:
    """Write the scenario; an existing file is kept unless ``force`` (InputError, exit 2)."""
    from perfgate.store import write_text

    if path.exists() and not force:
        raise InputError(f"{path} already exists: not overwritten (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, made.text, what="scenario")


def ci_snippet(path: Path) -> str:
    """What to run next, locally and in CI (printed by ``perfgate init``)."""
    scenario = "" if path == LOCAL_SCENARIO else f" --scenario {path}"
    return f"""\
Next:
  perfgate validate {path}        # check it without load
  perfgate run{scenario} --promote   # ramp until the SLO breaks; a pass becomes the baseline

In CI, after the release candidate is deployed to staging (GitHub Actions; docs/ci.md has the
GitLab template, and how baselines persist on a git branch):
  permissions: {{contents: write, pull-requests: write}}
  steps:
    - uses: actions/checkout@v4
    - uses: <owner>/perfgate@<tag>
      with:
        scenario: {path}
        target: ${{{{ vars.STAGING_URL }}}}   # overrides staging.target
        baseline-target: ${{{{ vars.PREVIOUS_URL }}}}   # the previous release, side by side
Any other runner:
  perfgate run{scenario} --target "$STAGING_URL" --baseline-target "$PREVIOUS_URL" --quiet
  # without --baseline-target only the previous release's stored numbers remain: more gates end
  # inconclusive (docs/verdict.md); PERFGATE_TARGET and PERFGATE_BASELINE_TARGET work too
  # exit codes: 0 pass, 1 blocked, 2 bad input, 3 infrastructure, 4 inconclusive
"""


# -- OpenAPI ------------------------------------------------------------------------------------


def openapi_requests(doc: Any, prefix: str = "") -> list[dict[str, Any]]:
    """One request per GET/POST operation of an OpenAPI 3 document (ScenarioError if none)."""
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3"):
        raise ScenarioError("OpenAPI document: not OpenAPI 3 (no `openapi: 3.x` key)")
    paths = doc.get("paths")
    if not isinstance(paths, dict):
        raise ScenarioError("OpenAPI document: no `paths` mapping")
    base = prefix or _server_path(doc)
    out = []
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in ("get", "post"):
            op = item.get(method)
            if isinstance(op, dict):
                out.append(_request(doc, base, str(path), method, op, shared))
    if not out:
        raise ScenarioError("OpenAPI document: no GET or POST operation under `paths`")
    return out


def _request(
    doc: dict[str, Any], base: str, path: str, method: str, op: dict[str, Any], shared: list[Any]
) -> dict[str, Any]:
    params = [_resolve(doc, p) for p in [*shared, *(op.get("parameters") or [])]]
    concrete, query = path, {}
    for p in params:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            continue
        value = _param_example(doc, p)
        if p.get("in") == "path":
            quoted = urllib.parse.quote(str(value), safe="")
            concrete = concrete.replace("{" + p["name"] + "}", quoted)
        elif p.get("in") == "query" and p.get("required"):
            query[p["name"]] = value
    concrete = re.sub(r"\{[^}]*\}", "1", concrete)  # a path parameter the document left out
    request: dict[str, Any] = {
        "name": f"{method.upper()} {path}",
        "method": method.upper(),
        "path": base + concrete,
    }
    if query:
        request["params"] = query
    body = _body_example(doc, op.get("requestBody")) if method == "post" else None
    if body is not None:
        request["json"] = body
    request["weight"] = WEIGHTS[method]
    return request


def _param_example(doc: dict[str, Any], param: dict[str, Any]) -> Any:
    value = _example_of(doc, param)
    return "example" if value is None else value


def _example_of(doc: dict[str, Any], holder: dict[str, Any]) -> Any:
    """A parameter's or media type's ``example``, first ``examples`` value, or its schema's."""
    if "example" in holder:
        return holder["example"]
    examples = holder.get("examples")
    if isinstance(examples, dict) and examples:
        first = _resolve(doc, next(iter(examples.values())))
        if isinstance(first, dict) and "value" in first:
            return first["value"]
    return schema_example(doc, holder.get("schema") or {})


def _body_example(doc: dict[str, Any], body: Any) -> Any:
    body = _resolve(doc, body)
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, dict):
        return None
    media = next((v for k, v in content.items() if "json" in str(k)), None)
    if not isinstance(media, dict):
        return None
    return _example_of(doc, media)


def schema_example(doc: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """An example value for a JSON schema: its own example/default/enum, else one by type."""
    schema = _resolve(doc, schema)
    if depth > MAX_DEPTH or not isinstance(schema, dict):
        return None
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = schema_example(doc, part, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    for key in ("oneOf", "anyOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema_example(doc, schema[key][0], depth + 1)
    return _typed_example(doc, schema, depth)


def _typed_example(doc: dict[str, Any], schema: dict[str, Any], depth: int) -> Any:
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {
            str(k): schema_example(doc, v, depth + 1)
            for k, v in props.items()
            if isinstance(props, dict)
        }
    if kind == "array":
        item = schema_example(doc, schema.get("items") or {}, depth + 1)
        return [] if item is None else [item]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "string":
        return _STRING_FORMATS.get(str(schema.get("format")), "string")
    return None


def _resolve(doc: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """``node`` with a local ``$ref`` (``#/components/...``) followed; anything else as is."""
    if not isinstance(node, dict) or not isinstance(node.get("$ref"), str) or depth > MAX_DEPTH:
        return node
    ref = node["$ref"]
    if not ref.startswith("#/"):
        return {}
    target: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part) if isinstance(target, dict) else None
    return _resolve(doc, target, depth + 1)


def _server_path(doc: dict[str, Any]) -> str:
    """The path of the first server URL (``/api/v1``), its {variables} at their defaults."""
    servers = doc.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return ""
    url = str(servers[0].get("url") or "")
    for var, spec in (servers[0].get("variables") or {}).items():
        if isinstance(spec, dict):
            url = url.replace("{" + str(var) + "}", str(spec.get("default", "")))
    return urllib.parse.urlsplit(url).path.rstrip("/")


# -- the file -----------------------------------------------------------------------------------


def _name_from_host(host: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", host).strip("-.")[:63]
    return name if name and name[0].isalnum() else "service"


def _render(
    name: str, origin: str, requests: list[dict[str, Any]], source: str, output: Path
) -> str:
    """The scenario file: comments saying what to change, then plain YAML."""
    head = yaml.safe_dump(
        {
            "name": name,
            "staging": {"provider": "none", "target": origin},
        },
        sort_keys=False,
    )
    users = yaml.safe_dump(
        {"users": {"wait": 0, "requests": requests}},
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
        width=100,
    )
    return f"""\
# Written by {source}: a starting point, edit it freely.
# `perfgate validate {output}` checks it; `perfgate run` ramps closed-model users (no
# think time) until the SLO below breaks. --target/--host or PERFGATE_TARGET override the URL.
# Secrets: headers take ${{VAR}} from the environment and are redacted in every output, e.g.
#   users: {{headers: {{Authorization: "Bearer ${{API_TOKEN}}"}}}}
{head}{users}ramp:
  strategy: adaptive      # exponential growth, then bisection to the SLO boundary
  start_users: 10
  step_users: 10
  max_users: 500          # raise it if the run says "break not found"
  step_seconds: 10
slo:
  p95_ms: 500             # the latency your users must get
  error_rate: 0.01
gate:
  max_regression: 0.10    # pass only when credibly no more than 10 % worse than the last release
  # min_users: 100        # the absolute floor: the load the business needs
"""
