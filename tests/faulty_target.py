"""A small HTTP target whose faults a test switches: die, 5xx bursts, hang, reset, plain errors.

Run it as its own process (so "die" is a real process death the kernel cleans up)::

    python tests/faulty_target.py --schedule "0:ok,3.2:die" --delay-ms 5

It prints ``{"url": "http://127.0.0.1:PORT"}`` on stdout once listening. The schedule's times are
seconds since the first load request (a path under ``/work``; perfgate's reachability probe of
``/`` does not start the clock). Modes, for every ``/work…`` request:

- ``ok``: answer 200 after ``--delay-ms``;
- ``error``: answer 503 at once;
- ``burst``: 5xx bursts: 503 for the first ``--burst-s`` of every ``--period-s``, else ``ok``;
- ``hang``: never answer (the client's request timeout must fire);
- ``reset``: reset the TCP connection (SO_LINGER 0 + abort: the client sees ECONNRESET);
- ``die``: the process SIGKILLs itself (connections reset, later ones refused).

Two paths misbehave whatever the mode: ``/trickle`` answers 200 and then its body one byte every
``--trickle-ms`` (socket timeouts never fire; only a deadline on the whole request does), and
``/away`` redirects (302) to ``--redirect-to`` (another origin).

``POST /__mode/NAME`` switches the mode now (tests that drive the fault by hand);
``GET /__stats`` returns the requests answered per mode (and ``seen``: every request, with
``api_key``: those that carried an ``X-Api-Key`` header). The process exits by itself when its
parent goes away or after ``--lifetime-s``, so a failed test never leaves it behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MODES = ("ok", "error", "burst", "hang", "reset", "die")


def parse_schedule(text: str) -> list[tuple[float, str]]:
    """``"0:ok,3.2:die"`` → ``[(0.0, "ok"), (3.2, "die")]`` (sorted by time)."""
    out: list[tuple[float, str]] = []
    for part in text.split(","):
        at, _, mode = part.strip().partition(":")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
        out.append((float(at), mode))
    return sorted(out)


class Behaviour:
    """The target's current mode: from the schedule, or set by ``POST /__mode/NAME``."""

    def __init__(self, schedule: list[tuple[float, str]], burst_s: float, period_s: float) -> None:
        self.schedule = schedule
        self.burst_s = burst_s
        self.period_s = period_s
        self.t0: float | None = None
        self.forced: tuple[float, str] | None = None
        self.stats: Counter[str] = Counter()

    def mode(self) -> tuple[str, float]:
        """(mode, seconds since that mode began)."""
        now = time.monotonic()
        if self.forced is not None:
            return self.forced[1], now - self.forced[0]
        if self.t0 is None:
            self.t0 = now
        t = now - self.t0
        current, since = "ok", 0.0
        for at, mode in self.schedule:
            if t >= at:
                current, since = mode, at
        return current, t - since


def _reset(transport: asyncio.BaseTransport | None) -> None:
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0: close() sends RST instead of FIN, the client sees "connection reset".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    behaviour = Behaviour(parse_schedule(args.schedule), args.burst_s, args.period_s)

    async def work(request: web.Request) -> web.StreamResponse:
        behaviour.stats["seen"] += 1
        behaviour.stats["api_key"] += "X-Api-Key" in request.headers
        mode, since = behaviour.mode()
        if mode == "burst":
            mode = "error" if since % behaviour.period_s < behaviour.burst_s else "ok"
        behaviour.stats[mode] += 1
        if mode == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "reset":
            _reset(request.transport)
            raise asyncio.CancelledError  # nothing more to say on a reset connection
        if mode == "error":
            return web.json_response({"error": "injected fault"}, status=503)
        await asyncio.sleep(args.delay_ms / 1000.0)
        return web.json_response(
            {"ok": True, "echo_auth": bool(request.headers.get("Authorization"))}
        )

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b"x")
            await asyncio.sleep(args.trickle_ms / 1000.0)
        return response

    async def away(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(args.redirect_to + "/work/redirected")

    async def root(request: web.Request) -> web.StreamResponse:
        return web.json_response({"target": "faulty"})

    async def force(request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        if mode not in MODES:
            return web.json_response({"error": f"unknown mode {mode}"}, status=400)
        behaviour.forced = (time.monotonic(), mode)
        return web.json_response({"mode": mode})

    async def stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(dict(behaviour.stats))

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_post("/__mode/{mode}", force)
    app.router.add_get("/__stats", stats)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/away", away)
    app.router.add_route("*", "/work{tail:.*}", work)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    sys.stdout.write(json.dumps({"url": f"http://127.0.0.1:{port}"}) + "\n")
    sys.stdout.flush()
    parent = os.getppid()
    deadline = time.monotonic() + args.lifetime_s
    while time.monotonic() < deadline and os.getppid() == parent:
        await asyncio.sleep(0.2)
    os._exit(0)  # no graceful drain: hung handlers would hold it open


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--schedule", default="0:ok")
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--burst-s", type=float, default=0.25)
    parser.add_argument("--period-s", type=float, default=1.0)
    parser.add_argument("--lifetime-s", type=float, default=120.0)
    parser.add_argument("--trickle-ms", type=float, default=100.0)
    parser.add_argument("--redirect-to", default="http://127.0.0.1:9")
    args = parser.parse_args(argv)
    parse_schedule(args.schedule)
    import logging

    logging.disable(logging.CRITICAL)  # a reset or killed handler is the point, not news
    asyncio.run(_serve(args))
    return 0


# ---------------------------------------------------------------------------------------------
# Test side
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningTarget:
    url: str
    pid: int


@contextmanager
def faulty_target(schedule: str = "0:ok", **options: float | str) -> Iterator[RunningTarget]:
    """Start the target as a child process; always kill and reap it on exit."""
    cmd = [sys.executable, __file__, "--schedule", schedule]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"faulty target did not start (exit code {proc.wait(5)})")
        yield RunningTarget(url=json.loads(line)["url"], pid=proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
