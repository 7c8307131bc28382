"""A baseline store kept on a git branch: ``git+<remote-url>#<branch>``.

CI workspaces are thrown away; a branch of a git repository is not (github-action-benchmark
keeps its data the same way). Reading: a shallow fetch of the branch into a private temporary
clone, whose work tree is the baseline folder every reader already understands. Writing: the
caller's write function runs on a fresh checkout of the branch's tip, the result is committed
and pushed; a rejected push (another pipeline promoted first, or a hook said no) fetches the new
tip and runs the write again on top of it, so two pipelines promoting at once both land, and the
"already exists" check sees the other's commit. After :data:`PUSH_ATTEMPTS` rejections the
written files are copied to a folder the caller names and a :class:`StoreError` (exit 3) says
where: a baseline is never lost.

Why the ``git`` command and not a library (dulwich, pygit2, GitPython): every CI runner has git
and its credential set-up (helpers, ``insteadOf`` rewrites, SSH agents, proxies) already working;
a library would need that re-done and adds a dependency, while this module needs five commands.
Each runs with no terminal prompt (``GIT_TERMINAL_PROMPT=0``, SSH in batch mode), a timeout
that kills its whole process group, ``LC_ALL=C``, and every message it produces has the URL's
user information (tokens) replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from perfgate.errors import InfrastructureError, InputError

__all__ = [
    "GIT_TIMEOUT_S",
    "PREFIX",
    "PUSH_ATTEMPTS",
    "GitBranch",
    "GitSpec",
    "StoreError",
    "parse",
    "redact",
]

T = TypeVar("T")

PREFIX = "git+"
GIT_TIMEOUT_S = 120.0  # one git command; a fetch of a baseline branch takes a second or two
PUSH_ATTEMPTS = 5  # fetch → write → commit → push rounds before giving up
BACKOFF_S = 0.25  # first retry's wait; doubles, with jitter so two pipelines fall out of step
AUTHOR = ("perfgate", "perfgate@localhost")  # used only where git has no identity configured

# Variables that point git at another repository's parts (a hook's environment sets them).
_REPO_VARIABLES = (
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)
# A push that no retry can fix: credentials or rights, not a race with another pipeline.
_FATAL_PUSH = re.compile(
    r"Authentication failed|could not read (Username|Password)|Permission denied|"
    r"returned error: 40[13]|access denied|not authorized",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/@\s]+)@")


class StoreError(InfrastructureError):
    """The git baseline store could not be read or written (network, credentials, rejected push)."""


@dataclass(frozen=True, slots=True)
class GitSpec:
    """``git+<url>#<branch>``; ``url`` may hold credentials, so only :meth:`display` is shown."""

    url: str = field(repr=False)
    branch: str

    def display(self) -> str:
        return f"{PREFIX}{redact(self.url)}#{self.branch}"

    def secrets(self) -> tuple[str, ...]:
        """The URL's credential, raw and %-decoded, to strip from any text that may show it.

        The password; or, without one, an HTTP(S) user name of 8 characters or more (a token
        given as the user, ``https://<token>@host``). ``git@`` of SSH URLs is no secret.
        """
        match = _USERINFO.search(self.url)
        if not match:
            return ()
        user, has_password, password = match.group("info").partition(":")
        if has_password:
            found = password
        elif self.url.lower().startswith(("http://", "https://")) and len(user) >= 8:
            found = user
        else:
            return ()
        return tuple(sorted({found, unquote(found)} - {""}, key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every URL's user information replaced by ``***`` (and ``secrets`` too)."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def parse(spec: str) -> GitSpec:
    """A ``git+<url>#<branch>`` store; InputError (exit 2) naming what is missing."""
    body = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    url, sep, branch = body.rpartition("#")
    shown = redact(spec)
    if not sep or not url:
        raise InputError(
            f"baseline store {shown!r}: expected git+<remote-url>#<branch> "
            "(e.g. git+https://github.com/org/repo.git#perfgate-baselines)"
        )
    if not _valid_branch(branch):
        raise InputError(f"baseline store {shown!r}: {branch!r} is not a valid branch name")
    if "://" in url:
        with contextlib.suppress(ValueError):
            if urlsplit(url).scheme and not urlsplit(url).netloc and not url.startswith("file:"):
                raise InputError(f"baseline store {shown!r}: the URL has no host")
    return GitSpec(url=url, branch=branch)


def _valid_branch(name: str) -> bool:
    bad = (" ", "~", "^", ":", "?", "*", "[", "\\", "..", "@{", "//")
    return (
        bool(name)
        and not any(b in name for b in bad)
        and not name.startswith(("-", "/", "."))
        and not name.endswith((".lock", "/", "."))
        and all(32 < ord(c) < 127 for c in name)
    )


class GitBranch:
    """A private clone of one branch; use as a context manager (the clone is removed on exit)."""

    def __init__(self, spec: GitSpec, *, log: Callable[[str], None] = lambda m: None) -> None:
        self.spec = spec
        self._log = log
        self._tmp: Path | None = None
        self.exists = (
            False  # whether the branch exists on the remote (else the first write makes it)
        )

    def describe(self, path: Path | None = None) -> str:
        """The store (and a file in it) as users should see it: ``git+<url>#<branch>[:path]``."""
        if path is None or self._tmp is None:
            return self.spec.display()
        with contextlib.suppress(ValueError):
            return f"{self.spec.display()}:{Path(path).relative_to(self.root)}"
        return str(path)

    @property
    def root(self) -> Path:
        """The work tree: ``<scenario>/<release>.json`` as in a baseline folder."""
        if self._tmp is None:
            raise RuntimeError("GitBranch used outside its context")
        return self._tmp / "tree"

    def __enter__(self) -> GitBranch:
        if shutil.which("git") is None:
            raise StoreError(
                f"baseline store {self.spec.display()}: git is not installed (it is needed for "
                "a git+ store; install git or use a folder)"
            )
        self._tmp = Path(tempfile.mkdtemp(prefix="perfgate-store-"))
        try:
            self.root.mkdir()
            self._git("init", "-q")
            # the lock and temp files of perfgate.store's writers never become part of a commit
            (self._tmp / "git" / "info").mkdir(parents=True, exist_ok=True)
            (self._tmp / "git" / "info" / "exclude").write_text(".lock\n.*.tmp\n")
            self._git("remote", "add", "origin", self.spec.url)
            self._fetch()
            self._checkout()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- the commands ------------------------------------------------------------------------

    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a password nobody will type
            "GIT_ASKPASS": "true",
            "SSH_ASKPASS": "true",
            "GCM_INTERACTIVE": "never",
            "LC_ALL": "C",
            # the repository lives beside the work tree, so the tree is exactly the baselines
            "GIT_DIR": str(self._tmp / "git") if self._tmp else "",
            "GIT_WORK_TREE": str(self.root),
        }
        for name in _REPO_VARIABLES:  # set when perfgate runs inside a git hook: not ours
            env.pop(name, None)
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        for key, value in (("NAME", AUTHOR[0]), ("EMAIL", AUTHOR[1])):
            for who in ("AUTHOR", "COMMITTER"):
                env.setdefault(f"GIT_{who}_{key}", value)
        cmd = ["git", *args]
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a timeout kills git and its helpers (ssh, credential)
            )
        except OSError as exc:
            raise StoreError(
                f"baseline store {self.spec.display()}: cannot run git: {exc}"
            ) from exc
        try:
            out, err = proc.communicate(timeout=GIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise StoreError(
                f"baseline store {self.spec.display()}: git {args[0]} did not finish within "
                f"{GIT_TIMEOUT_S:g} s"
            ) from None
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if check and done.returncode != 0:
            raise StoreError(
                f"baseline store {self.spec.display()}: git {args[0]} failed: {self._why(done)}"
            )
        return done

    def _why(self, done: subprocess.CompletedProcess[str]) -> str:
        """The most telling line of git's output, without credentials."""
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        lines = [ln for ln in lines if ln not in ("remote:", "To")]
        # a push says why in "remote:" lines (a hook) and "! [rejected] … (fetch first)"
        telling = [ln for ln in lines if ln.startswith(("fatal:", "remote:", "!"))]
        telling = telling or [ln for ln in lines if ln.startswith("error:")]
        text = "; ".join((telling or lines or [f"exit status {done.returncode}"])[-3:])
        return redact(text, self.spec.secrets())

    def _fetch(self) -> None:
        ref = f"+refs/heads/{self.spec.branch}:refs/remotes/origin/{self.spec.branch}"
        done = self._git("fetch", "-q", "--depth", "1", "origin", ref, check=False)
        if done.returncode == 0:
            self.exists = True
            return
        if "couldn't find remote ref" in (done.stderr + done.stdout):
            self.exists = False  # a new store: the first promotion creates the branch
            return
        raise StoreError(
            f"baseline store {self.spec.display()}: cannot fetch the branch: {self._why(done)}"
        )

    def _checkout(self) -> None:
        branch = self.spec.branch
        if self.exists:
            self._git("checkout", "-q", "-f", "-B", branch, f"origin/{branch}")
        else:  # an empty, unborn branch (a failed attempt's commit is dropped)
            self._git("symbolic-ref", "HEAD", f"refs/heads/{branch}")
            self._git("update-ref", "-d", f"refs/heads/{branch}", check=False)
            self._git("read-tree", "--empty")
        self._git("clean", "-q", "-f", "-d", "-x")

    # -- publishing --------------------------------------------------------------------------

    def publish(self, write: Callable[[Path], T], *, message: str, keep_to: Path) -> T:
        """Run ``write(root)`` on the branch's tip, commit and push; retry on rejection.

        ``write`` may run more than once (once per attempt, each on a fresher tip) and must
        decide again every time (e.g. "already exists"). After the last rejected push the
        changed files are copied under ``keep_to`` and StoreError says where.
        """
        why = ""
        changed: list[str] = []
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            if attempt > 1:
                time.sleep(BACKOFF_S * 2 ** (attempt - 2) * (1 + random.random()))
                self._fetch()
                self._checkout()
            value = write(self.root)
            self._git("add", "-A")
            changed = self._git("diff", "--cached", "--name-only").stdout.split()
            if not changed:
                return value  # nothing new to record (the same content is already there)
            self._git("commit", "-q", "--no-verify", "-m", message)
            ref = f"HEAD:refs/heads/{self.spec.branch}"
            pushed = self._git("push", "-q", "--no-verify", "origin", ref, check=False)
            if pushed.returncode == 0:
                self.exists = True
                return value
            why = self._why(pushed)
            if _FATAL_PUSH.search(pushed.stderr):  # retrying cannot help: say so now
                raise StoreError(
                    f"baseline store {self.spec.display()}: cannot push ({why}); nothing was "
                    f"lost: {self._keep(changed, keep_to)}"
                )
            if attempt < PUSH_ATTEMPTS:
                self._log(
                    f"baseline store: push {attempt}/{PUSH_ATTEMPTS} rejected ({why}); retrying"
                )
        raise StoreError(
            f"baseline store {self.spec.display()}: push rejected {PUSH_ATTEMPTS} times "
            f"(last: {why}); nothing was lost: {self._keep(changed, keep_to)}"
        )

    def _keep(self, changed: list[str], keep_to: Path) -> str:
        """Copy the unpushed files under ``keep_to``; the phrase that says where they are."""
        copies: list[str] = []
        try:
            for name in changed:
                source = self.root / name
                if source.is_file():
                    target = Path(keep_to) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target)
                    copies.append(str(target))
        except OSError as exc:
            return f"could not keep a copy under {keep_to} ({exc.strerror or exc})"
        if not copies:
            return "no file had changed"
        return "kept at " + ", ".join(copies)


@contextlib.contextmanager
def checkout(spec: GitSpec, *, log: Callable[[str], None] = lambda m: None) -> Iterator[GitBranch]:
    """A fetched clone of ``spec``'s branch for the ``with`` block."""
    with GitBranch(spec, log=log) as branch:
        yield branch
