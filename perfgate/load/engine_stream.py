"""Event streams of virtual users: one WebSocket each, events correlated with sent requests.

A user with ``users.streams`` (or a locustfile that uses :class:`EventStream`) keeps a WebSocket
open, subscribes, and *awaits* the event of each request that announces one (the id captured
from the request's response). Event latency is the time from sending the request to receiving
the event that carries its id; an awaited event not received within ``timeout_s`` is *lost*.
Both are filed, like requests, into the step window open when their outcome is known
(:class:`perfgate.load.engine_record.StepRecorder`), never into the request statistics.

The client is websocket-client (``import websocket``): a plain blocking socket client that gevent's
monkey-patching makes cooperative, so each stream is one greenlet beside its user, as in
locust-plugins' SocketIOUser. (The ``websockets`` library is asyncio-only and would need a second
event loop inside Locust's gevent hub.)

Failures never hang a user: connecting has a timeout, a refused upgrade or a closed socket is
an error kind (``WS <name>: …``) in the step's errors table and the stream reconnects after
:data:`RECONNECT_S`, a frame that is not a JSON object is counted as malformed, and events awaited
meanwhile are lost when their timeout passes.

Locustfile use (the documented helper, docs/events.md)::

    from perfgate.load.engine_stream import EventStream

    class Trader(FastHttpUser):
        def on_start(self):
            self.events = EventStream(self.host.replace("http", "ws", 1) + "/events",
                                      subscribe={"op": "subscribe", "account": "t1"},
                                      event_id="order_id")
            self.events.start()

        def on_stop(self):
            self.events.close()

        @task
        def place(self):
            sent = self.events.now()
            order = self.client.post("/orders", json={...}).json()
            self.events.expect(order["id"], sent)
"""

# isort: off
import locust  # noqa: F401  first, as in every engine module (see perfgate.load.engine)

# isort: on
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event
import websocket

from perfgate.load.templates import MISSING, compile_capture

ACK_WAIT_S = 1.0  # longest wait for the server's first frame after subscribing
RECONNECT_S = 1.0  # wait before reconnecting a failed or closed stream
# Receive timeout: how often awaited events are checked for their deadline. An idle stream wakes
# this often; at 0.1 s the wake-ups cost more generator CPU than the events (benchmarks.md).
POLL_S = 0.5
EARLY_KEPT = 1000  # events received before their request's answer, kept per stream

_perf = time.perf_counter

Rule = tuple[Callable[[Any], Any], Callable[[Any], bool]]  # (event → id or MISSING, filter)


class EventSink:
    """Where the streams of one engine process file their outcomes (set by the engine)."""

    __slots__ = ("listener", "pending")

    def __init__(self) -> None:
        self.listener: Any = None  # perfgate.load.engine_record.RequestListener
        self.pending = 0  # events awaited by every stream of this process (the backlog)

    def recorder(self) -> Any:
        listener = self.listener
        return None if listener is None else listener.rec


SINK = EventSink()


def rule(event_id: str, match: dict[str, Any] | None = None) -> Rule:
    """A correlation rule: the id's dotted path in an event, and fields the event must have."""
    get = compile_capture(event_id, "event_id")
    checks = tuple((compile_capture(k, "match"), v) for k, v in (match or {}).items())

    def accept(event: Any) -> bool:
        return all(g(event) == v for g, v in checks)

    return get, accept


class EventStream:
    """One WebSocket of one virtual user (``start`` it, ``expect`` ids, ``close`` it)."""

    def __init__(
        self,
        url: str,
        *,
        subscribe: Any = None,
        event_id: str = "order_id",
        rules: Sequence[Rule] = (),
        timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        name: str = "events",
        header: Sequence[str] = (),
    ) -> None:
        self.url = url
        self.subscribe = subscribe
        self.rules = tuple(rules) or (rule(event_id),)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.name = name
        self.header = list(header)
        self.awaited: OrderedDict[tuple[int, str], float] = OrderedDict()  # key → sent at
        self.waiting: dict[tuple[int, str], Any] = {}  # key → gevent Event of a waiting user
        self.early: OrderedDict[tuple[int, str], float] = OrderedDict()  # key → received at
        self.ws: Any = None
        self._greenlet: Any = None
        self._closed = False

    @staticmethod
    def now() -> float:
        """The clock ``expect`` takes its ``sent_at`` from (call it just before sending)."""
        return _perf()

    def start(self) -> None:
        """Connect and subscribe (waiting up to :data:`ACK_WAIT_S` for the server's first frame,
        so that the user's first request does not race its subscription), then receive in a
        greenlet of its own. A failed connection is retried there."""
        connected = self._connect()
        self._greenlet = gevent.spawn(self._run, connected)

    def close(self) -> None:
        """Stop receiving and close the socket; events still awaited are forgotten."""
        self._closed = True
        SINK.pending -= len(self.awaited)
        self.awaited.clear()
        for done in self.waiting.values():
            done.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        self._close_socket()

    def expect(
        self, event_key: Any, sent_at: float, rule_index: int = 0, *, wait: bool = False
    ) -> None:
        """Await the event carrying ``event_key`` (the request was sent at ``sent_at``).

        ``wait``: return only once it was received or lost (its timeout passed), so the event
        path paces the user as the request path does (``users.streams.wait``).
        """
        key = (rule_index, str(event_key))
        received = self.early.pop(key, None)
        if received is not None:
            _received(max(0.0, received - sent_at) * 1000.0)
            return
        if key not in self.awaited:
            self.awaited[key] = sent_at
            SINK.pending += 1
        if wait and not self._closed:
            done = self.waiting[key] = gevent.event.Event()
            try:  # the receiving greenlet sets it; its deadline check runs every POLL_S
                done.wait(max(0.0, sent_at + self.timeout_s - _perf()) + 2 * POLL_S)
            finally:
                self.waiting.pop(key, None)

    # -- the stream's greenlet -----------------------------------------------------------------

    def _run(self, connected: bool) -> None:
        while not self._closed:
            if connected:
                self._receive()
            if not self._closed:
                self._wait(RECONNECT_S)
                connected = self._connect()

    def _connect(self) -> bool:
        try:
            self.ws = websocket.create_connection(
                self.url, timeout=self.connect_timeout_s, header=self.header
            )
            if self.subscribe is not None:
                self.ws.send(json.dumps(self.subscribe))
                self.ws.settimeout(min(ACK_WAIT_S, self.connect_timeout_s))
                # the acknowledgement (or a first event); some servers send none
                with contextlib.suppress(websocket.WebSocketTimeoutException):
                    self._on_frame(self.ws.recv())
            self.ws.settimeout(POLL_S)
            return True
        except websocket.WebSocketBadStatusException as exc:
            self._error(f"the server refused the WebSocket upgrade (HTTP {exc.status_code})")
        except (OSError, websocket.WebSocketException) as exc:
            self._error(f"could not connect: {type(exc).__name__}: {_one_line(exc)}")
        self._close_socket()
        return False

    def _receive(self) -> None:
        ws = self.ws
        while not self._closed:
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                self._expire()
                continue
            except websocket.WebSocketConnectionClosedException:
                self._error("the server closed the stream")
                break
            except (OSError, websocket.WebSocketException) as exc:
                self._error(f"stream failed: {type(exc).__name__}: {_one_line(exc)}")
                break
            if not ws.connected:  # a close frame: recv answered it and returned ""
                self._error("the server closed the stream")
                break
            self._on_frame(frame)
            self._expire()
        self._close_socket()

    def _on_frame(self, frame: Any) -> None:
        now = _perf()
        try:
            event = json.loads(frame)
        except (ValueError, TypeError):
            event = None
        if not isinstance(event, dict):
            self._error("malformed event (not a JSON object)")
            return
        sent = event.get("sent")
        if isinstance(sent, int | float) and not isinstance(sent, bool):
            _read_lag(max(0.0, time.time() - float(sent)) * 1000.0)
        for index, (get, accept) in enumerate(self.rules):
            value = get(event)
            if value is MISSING or not accept(event):
                continue
            key = (index, str(value))
            sent_at = self.awaited.pop(key, None)
            if sent_at is None:
                self.early[key] = now
                if len(self.early) > EARLY_KEPT:
                    self.early.popitem(last=False)
                continue
            SINK.pending -= 1
            _received((now - sent_at) * 1000.0)
            self._release(key)

    def _expire(self) -> None:
        """Awaited events past their timeout are lost (oldest first: one timeout for all)."""
        deadline = _perf() - self.timeout_s
        awaited = self.awaited
        while awaited:
            key, sent_at = next(iter(awaited.items()))
            if sent_at > deadline:
                break
            del awaited[key]
            SINK.pending -= 1
            _lost()
            self._release(key)

    def _release(self, key: tuple[int, str]) -> None:
        done = self.waiting.get(key)
        if done is not None:
            done.set()

    def _wait(self, seconds: float) -> None:
        end = _perf() + seconds
        while not self._closed and _perf() < end:
            gevent.sleep(POLL_S)
            self._expire()

    def _error(self, kind: str) -> None:
        rec = SINK.recorder()
        if rec is not None:
            rec.ev_errors += 1
            rec.note_error("WS", self.name, kind)

    def _close_socket(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.5)
            except Exception:  # closing is best effort: the socket may be gone already
                ws.shutdown()


def _received(latency_ms: float) -> None:
    rec = SINK.recorder()
    if rec is not None:
        rec.ev_received += 1
        rec.ev_hist.record(latency_ms)


def _lost() -> None:
    rec = SINK.recorder()
    if rec is not None:
        rec.ev_lost += 1


def _read_lag(lag_ms: float) -> None:
    rec = SINK.recorder()
    if rec is not None:
        rec.ev_read_lag.record(lag_ms)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or "(no message)"
