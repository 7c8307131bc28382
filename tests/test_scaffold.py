# ruff: noqa: F811  the fixtures ``env`` and ``target`` come from test_cli (imported by name)
"""`perfgate init`: a scenario for your own service from a URL or an OpenAPI 3 document.

In-process through ``perfgate.cli._main``; the run at the end uses test_cli's simulator in the
load stage's seat against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from perfgate.scenario import load_scenario
from tests.test_cli import Env, env, target  # noqa: F401  fixtures

PETSTORE = {
    "openapi": "3.0.3",
    "info": {"title": "pets", "version": "1"},
    "servers": [
        {"url": "https://pets.example.com/{version}", "variables": {"version": {"default": "v1"}}}
    ],
    "paths": {
        "/pets": {
            "get": {
                "operationId": "listPets",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "integer", "default": 20},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
            },
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}
                    }
                }
            },
            "delete": {"operationId": "notLoaded"},
        },
        "/pets/{petId}": {
            "parameters": [{"$ref": "#/components/parameters/PetId"}],
            "get": {"operationId": "showPet"},
        },
        "/health": {"get": {}},
    },
    "components": {
        "parameters": {"PetId": {"name": "petId", "in": "path", "required": True, "example": 42}},
        "schemas": {
            "NewPet": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "example": "Rex"},
                    "tag": {"type": "string", "enum": ["dog", "cat"]},
                    "born": {"type": "string", "format": "date"},
                    "owner": {"$ref": "#/components/schemas/Owner"},
                },
            },
            "Owner": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 7}}},
        },
    },
}

EXPECTED = [
    {
        "name": "GET /pets",
        "method": "GET",
        "path": "/v1/pets",
        "params": {"limit": 20},
        "weight": 3,
    },
    {
        "name": "POST /pets",
        "method": "POST",
        "path": "/v1/pets",
        "json": {"name": "Rex", "tag": "dog", "born": "2024-01-01", "owner": {"id": 7}},
        "weight": 1,
    },
    {"name": "GET /pets/{petId}", "method": "GET", "path": "/v1/pets/42", "weight": 3},
    {"name": "GET /health", "method": "GET", "path": "/v1/health", "weight": 3},
]


def _requests(path: Path) -> list[dict[str, object]]:
    return list(yaml.safe_load(path.read_text())["users"]["requests"])


def test_init_writes_a_valid_scenario_and_never_overwrites(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "svc" / "perfgate.yaml"
    ran = env.run("init", "http://localhost:8080/api/health", "-o", str(out))
    assert ran.code == 0, ran.err
    assert f"scenario: {out}" in ran.out and "perfgate run" in ran.out  # the CI snippet
    # the snippet measures the previous release side by side, the gate's trustworthy default
    assert "baseline-target: ${{ vars.PREVIOUS_URL }}" in ran.out
    assert '--target "$STAGING_URL" --baseline-target "$PREVIOUS_URL"' in ran.out
    scen = load_scenario(out, env={})
    assert (scen.name, scen.staging.provider) == ("localhost", "none")
    assert scen.staging.target == "http://localhost:8080"
    assert [(r.method, r.path) for r in scen.users.requests] == [("GET", "/api/health")]
    before = out.read_bytes()
    ran = env.run("init", "http://other:9000", "-o", str(out))
    assert ran.code == 2
    assert (
        ran.error
        == f"perfgate: error: {out} already exists: not overwritten (use --force to replace it)"
    )
    assert out.read_bytes() == before
    ran = env.run("init", "http://other:9000", "-o", str(out), "--force", "--name", "other")
    assert ran.code == 0, ran.err
    assert load_scenario(out, env={}).name == "other"


@pytest.mark.parametrize("kind", ["yaml", "json"])
def test_init_from_an_openapi_document(env: Env, tmp_path: Path, kind: str) -> None:
    doc = tmp_path / f"openapi.{kind}"
    doc.write_text(
        json.dumps(PETSTORE) if kind == "json" else yaml.safe_dump(PETSTORE, sort_keys=False)
    )
    out = tmp_path / "pets.yaml"
    ran = env.run("init", "http://127.0.0.1:8000", "--openapi", str(doc), "-o", str(out))
    assert ran.code == 0, ran.err
    assert _requests(out) == EXPECTED
    assert env.run("validate", str(out)).code == 0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"swagger": "2.0", "paths": {}}, "not OpenAPI 3 (no `openapi: 3.x` key)"),
        ({"openapi": "3.1.0", "paths": {"/x": {"put": {}}}}, "no GET or POST operation"),
    ],
)
def test_init_refuses_unusable_openapi_documents(
    env: Env, tmp_path: Path, doc: dict[str, object], message: str
) -> None:
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "perfgate.yaml"
    ran = env.run("init", "http://127.0.0.1:8000", "--openapi", str(path), "-o", str(out))
    assert ran.code == 2
    assert message in ran.error
    assert not out.exists()


def test_init_refuses_a_bad_url(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "perfgate.yaml"
    for url in ("ftp://host", "http://user:hunter2@host"):
        ran = env.run("init", url, "-o", str(out))
        assert ran.code == 2
        assert "hunter2" not in ran.err
    assert not out.exists()


def test_run_in_the_folder_uses_its_perfgate_yaml(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(env.tmp)
    assert env.run("init", env.target).code == 0
    ran = env.run("run", "--json", "--release", "r1")
    assert ran.code == 0, ran.err
    result = json.loads(ran.out)
    assert (result["scenario"], result["target"]) == ("127.0.0.1", env.target)
