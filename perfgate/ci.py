"""CI integration: the pull/merge request comment, and posting it once per request.

``perfgate ci comment RESULT_JSON`` prints the comment's Markdown (verdict, the rule that decided
it and the change against the previous release); with ``--post`` it creates the comment on the
pull request (GitHub Actions) or merge request (GitLab CI) the job runs for, or updates the one
an earlier run posted: the body starts with a hidden marker naming the scenario, so a request
gets one comment per scenario however often the pipeline runs. The GitHub Action (action.yml)
and the GitLab template (ci/gitlab/perfgate.gitlab-ci.yml) call it; the logic is here so that it
is tested without a CI service.

The forges' REST APIs are called with the standard library (one request per page of comments,
one to create or update); failures are :class:`CommentError` (exit 3) in one line, and the
token never appears in a message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from perfgate import fmt
from perfgate.errors import InfrastructureError, InputError
from perfgate.models import RunResult
from perfgate.report.common import comparison_text, deciding_rule, verdict_word
from perfgate.report.markdown import md

__all__ = [
    "CommentError",
    "Forge",
    "comment_body",
    "env_report_url",
    "failure_body",
    "forge_from_env",
    "marker",
    "upsert_comment",
]

TIMEOUT_S = 30.0
MAX_PAGES = 50  # 5,000 comments: far more than any request has; bounds a misbehaving API
_ICONS = {"pass": "✅", "block": "❌", "inconclusive": "⚠️"}
_FAILURES = {  # DESIGN.md's exit codes of a run that ends without a verdict
    2: "bad input: scenario, baseline, option",
    3: "infrastructure: staging, target, load engine or baseline store",
    70: "internal error",
    130: "interrupted by SIGINT",
    143: "interrupted by SIGTERM",
}


class CommentError(InfrastructureError):
    """The forge's API could not be read or written (network, token, permissions)."""


def marker(scenario: str) -> str:
    """The hidden first line that finds this scenario's earlier comment on the request."""
    return f"<!-- perfgate-comment scenario={urllib.parse.quote(scenario)} -->"


# ---------------------------------------------------------------------------------------------
# The body
# ---------------------------------------------------------------------------------------------


def comment_body(result: RunResult, *, report_url: str = "", key: str = "") -> str:
    """The comment: verdict, deciding rule, the change against the previous release, rules.

    ``key`` names the comment to update (default: the scenario's name).
    """
    icon = "⛔" if result.aborted else _ICONS.get(result.verdict, "")
    lines = [
        marker(key or result.scenario),
        f"### {icon} perfgate: {md(result.scenario)} @ {md(result.release)} — "
        f"**{verdict_word(result)}**",
        "",
        f"**{md(_decision(result))}**",
        "",
    ]
    lines += _delta(result)
    if result.bottleneck is not None:  # why it broke (docs/attribution.md)
        cost = result.bottleneck.cost
        lines += [f"Why: {md(result.bottleneck.sentence)}", ""]
        lines += [f"Cost: {md(cost.text)}", ""] if cost is not None and cost.text else []
    compared = comparison_text(result)
    if compared:
        lines += [f"_{md(compared)}_", ""]
    if result.rules:
        lines += ["<details><summary>Every rule</summary>", ""]
        lines += ["| Rule | Outcome | Message |", "|---|---|---|"]
        lines += [f"| {md(r.name)} | {r.outcome.upper()} | {md(r.message)} |" for r in result.rules]
        lines += ["", "</details>", ""]
    tail = f"perfgate {md(result.perfgate_version)}"
    if report_url:
        tail = f"[Full report]({report_url}) · {tail}"
    lines.append(tail)
    return "\n".join(lines) + "\n"


def failure_body(code: int, *, key: str, report_url: str = "") -> str:
    """The comment of a run that stopped before a verdict, replacing an older verdict's."""
    what = _FAILURES.get(code, "internal error or interrupted")
    lines = [
        marker(key),
        f"### ⛔ perfgate: {md(key)} — **no verdict** (exit {code}: {what})",
        "",
        "The gate stopped before it could judge this release; the job log has the one-line "
        "error. An earlier verdict shown here no longer applies.",
        "",
    ]
    lines.append(f"[Job log]({report_url})" if report_url else "See the job log.")
    return "\n".join(lines) + "\n"


def _decision(result: RunResult) -> str:
    """One sentence: the rule that decided, or (a pass) the comparison that let it through."""
    if result.aborted:
        return f"aborted: {result.abort_reason or 'the run did not finish'}"
    decided = deciding_rule(result)
    if decided:
        return decided
    for name in ("regression", "floor"):
        for rule in result.rules:
            if rule.name == name and rule.outcome == "pass":
                return f"passed; {rule.message}"
    return "passed every rule" if result.verdict == "pass" else f"verdict: {result.verdict}"


def _delta(result: RunResult) -> list[str]:
    """This release against the previous one: saturation users and throughput at the SLO."""
    sat, base = result.saturation, result.baseline
    if base is None:
        return [
            f"Saturation: {fmt.saturation_users(sat)} users at {fmt.rps(sat.throughput_rps)} "
            "req/s. No previous release to compare with yet.",
            "",
        ]
    b = base.saturation
    rows = [
        f"| | This release | {md(base.release)} | Change |",
        "|---|---:|---:|---:|",
        f"| Saturation (users) | {fmt.saturation_users(sat)} | {fmt.saturation_users(b)} | "
        f"{fmt.change(sat.users, b.users)} |",
        f"| Throughput at the SLO (req/s) | {fmt.rps(sat.throughput_rps)} | "
        f"{fmt.rps(b.throughput_rps)} | {fmt.change(sat.throughput_rps, b.throughput_rps)} |",
    ]
    if result.looks:
        look = result.looks[-1]
        rows.append(
            f"| Goodput ratio side by side | {look.ratio:.3f} | 1 | "
            f"{fmt.percent((look.ratio - 1) * 100)} (bounds {look.ratio_lo:.3f}–"
            f"{look.ratio_hi:.3f}) |"
        )
    return [*rows, ""]


# ---------------------------------------------------------------------------------------------
# Posting: one comment per scenario and request, updated in place
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Forge:
    """Where the comments of one pull/merge request live, and how to authenticate."""

    kind: Literal["github", "gitlab"]
    comments_url: str  # list (GET, paged) and create (POST)
    item_url: str  # update: ``{id}`` is replaced by the comment's id (PATCH / PUT)
    token: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        if self.kind == "github":
            return {
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        return {"PRIVATE-TOKEN": self.token}


def forge_from_env(env: Mapping[str, str], *, number: int | None = None) -> Forge:
    """The request this CI job runs for, from GitHub Actions' or GitLab CI's variables.

    GitHub: ``GITHUB_TOKEN``, ``GITHUB_REPOSITORY``, ``GITHUB_API_URL`` and the pull request
    number from the event (``GITHUB_EVENT_PATH``). GitLab: ``PERFGATE_GITLAB_TOKEN`` (a token
    with the api scope; job tokens cannot write notes), ``CI_API_V4_URL``, ``CI_PROJECT_ID``,
    ``CI_MERGE_REQUEST_IID``. InputError (exit 2) names what is missing.
    """
    if env.get("GITHUB_ACTIONS") == "true" or "GITHUB_REPOSITORY" in env:
        repo = _need(env, "GITHUB_REPOSITORY")
        token = _need(env, "GITHUB_TOKEN")
        api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
        pr = number if number is not None else _github_pr(env)
        base = f"{api}/repos/{repo}/issues"
        return Forge(
            kind="github",
            comments_url=f"{base}/{pr}/comments",
            item_url=f"{base}/comments/{{id}}",
            token=token,
        )
    if env.get("GITLAB_CI") == "true" or "CI_PROJECT_ID" in env:
        api = _need(env, "CI_API_V4_URL").rstrip("/")
        project = urllib.parse.quote(_need(env, "CI_PROJECT_ID"), safe="")
        iid = number if number is not None else _need(env, "CI_MERGE_REQUEST_IID")
        base = f"{api}/projects/{project}/merge_requests/{iid}/notes"
        return Forge(
            kind="gitlab",
            comments_url=base,
            item_url=f"{base}/{{id}}",
            token=_need(env, "PERFGATE_GITLAB_TOKEN"),
        )
    raise InputError("ci comment --post: not in GitHub Actions or GitLab CI (no GITHUB_* or CI_*)")


def _need(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise InputError(f"ci comment --post: ${name} is not set")
    return value


def _github_pr(env: Mapping[str, str]) -> int:
    path = _need(env, "GITHUB_EVENT_PATH")
    try:
        event = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"ci comment --post: cannot read the event {path}: {exc}") from exc
    number = (event.get("pull_request") or {}).get("number")
    if not isinstance(number, int):
        raise InputError(
            "ci comment --post: this workflow run is not for a pull request (no "
            "pull_request.number in $GITHUB_EVENT_PATH); give --number"
        )
    return number


def upsert_comment(forge: Forge, body: str) -> tuple[str, int]:
    """Update the comment carrying ``body``'s marker, or create one: ("updated"|"created", id)."""
    first_line = body.split("\n", 1)[0]
    for comment in _comments(forge):
        if first_line in str(comment.get("body", "")):
            cid = int(comment["id"])
            method = "PATCH" if forge.kind == "github" else "PUT"
            _call(forge, method, forge.item_url.format(id=cid), {"body": body})
            return "updated", cid
    created = _call(forge, "POST", forge.comments_url, {"body": body})
    return "created", int(created["id"])


def _comments(forge: Forge) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        sep = "&" if "?" in forge.comments_url else "?"
        batch = _call(forge, "GET", f"{forge.comments_url}{sep}per_page=100&page={page}")
        if not isinstance(batch, list):
            raise CommentError(f"{_where(forge)}: expected a list of comments")
        found += [c for c in batch if isinstance(c, dict) and "id" in c]
        if len(batch) < 100:
            break
    return found


def _call(forge: Forge, method: str, url: str, payload: dict[str, Any] | None = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {**forge.headers(), "User-Agent": "perfgate"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response's socket
        raise CommentError(
            f"{_where(forge)}: {method} answered HTTP {exc.code} {exc.reason}"
            + (" (can the token write comments?)" if exc.code in (401, 403, 404) else "")
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommentError(f"{_where(forge)}: {method} failed: {reason}") from None
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        raise CommentError(f"{_where(forge)}: {method} answered with something not JSON") from None


def _where(forge: Forge) -> str:
    parts = urllib.parse.urlsplit(forge.comments_url)
    return f"{forge.kind} comments at {parts.scheme}://{parts.hostname}{parts.path}"


def env_report_url(env: Mapping[str, str]) -> str:
    """A link to this CI run (where the report artifact is), from the CI's variables."""
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return env.get("CI_JOB_URL", "")
