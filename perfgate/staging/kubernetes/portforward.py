"""Port-forwarding through the API server, for a target or a load generator no one can reach.

One websocket per local connection, the ``v4.channel.k8s.io`` protocol, and every socket closed
deterministically when a connection or the forwarder ends.
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

from perfgate.errors import Interrupted, StagingError
from perfgate.staging.kubernetes import timing
from perfgate.staging.kubernetes.config import ClusterConfig
from perfgate.staging.kubernetes.rest import MAX_REASON, transport_reason

__all__ = ["PortForwarder"]


class PortForwarder:
    """127.0.0.1:<port> → pod:<port>: one websocket through the API server per connection.

    The websocket port-forward protocol (``v4.channel.k8s.io``): channel 0 carries data, channel 1
    errors, and each channel's first frame is the port number. The websocket comes from the
    official client's ``create_websocket`` (its TLS, proxy and auth handling); the frames are
    pumped here so that every socket is closed deterministically when a connection ends.
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        namespace: str,
        pod: str,
        port: int,
        log: Callable[[str], None],
    ) -> None:
        import kubernetes

        self._client = kubernetes.client.ApiClient(cluster.configuration)
        self._server = cluster.server
        self.namespace, self.pod, self.target_port = namespace, pod, port
        self._log = log
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._listener.settimeout(0.2)  # accept() must notice close() (closing does not wake it)
        self.port = int(self._listener.getsockname()[1])
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="perfgate-port-forward", daemon=True
        )
        self._acceptor.start()

    def _what(self) -> str:
        return f"port-forward to pod {self.pod}:{self.target_port} on {self._server}"

    def _open(self) -> Any:
        """A websocket to the pod's port, past the two port-number frames."""
        import websocket
        from kubernetes.stream.ws_client import create_websocket, get_websocket_url

        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/portforward"
        try:
            _, url, headers, _, _ = self._client.param_serialize(
                "GET",
                path,
                query_params=[("ports", str(self.target_port))],
                header_params={},
                auth_settings=["BearerToken"],
            )
            ws = create_websocket(
                self._client.configuration,
                get_websocket_url(url),
                headers={k.lower(): v for k, v in headers.items()},
            )
        except websocket.WebSocketBadStatusException as exc:
            raise StagingError(
                f"{self._what()}: {exc.status_code} {exc.status_message or ''}".rstrip()
            ) from exc
        except (websocket.WebSocketException, OSError) as exc:
            raise StagingError(f"{self._what()}: {transport_reason(str(exc))}") from exc
        try:
            ws.settimeout(max(timing.TIMING.connect_timeout_s, timing.TIMING.probe_timeout_s))
            headers_seen = 0
            while headers_seen < 2:  # channel 0 and channel 1 each announce the port first
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise StagingError(f"{self._what()}: the API server closed the tunnel")
                if opcode == websocket.ABNF.OPCODE_BINARY and len(frame.data) == 3:
                    headers_seen += 1
            ws.settimeout(None)
        except BaseException as exc:
            close_ws(ws)
            if isinstance(exc, StagingError | KeyboardInterrupt | Interrupted | SystemExit):
                raise
            raise StagingError(f"{self._what()}: {transport_reason(str(exc))}") from exc
        return ws

    def check(self) -> None:
        """Open and close one tunnel, so RBAC or a dead pod fails now, not mid-ramp."""
        import websocket

        ws = self._open()
        try:
            # an unreachable pod port shows up on the error channel right away, or never
            ready, _, _ = select.select([ws.sock], [], [], min(0.2, timing.TIMING.probe_timeout_s))
            if ready:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == websocket.ABNF.OPCODE_BINARY and frame.data[:1] == b"\x01":
                    message = frame.data[1:].decode(errors="replace").strip()
                    raise StagingError(f"{self._what()}: {message[:MAX_REASON]}")
        except (websocket.WebSocketException, OSError) as exc:
            raise StagingError(f"{self._what()}: {transport_reason(str(exc))}") from exc
        finally:
            close_ws(ws)

    def retarget(self, pod: str, port: int) -> None:
        """Forward to ``pod`` from now on (a rollout replaced the old one); drop old tunnels.

        The local port stays, so the load keeps its URL; connections into the old pod are shut
        (the load is idle while a cross-over restages, and reconnects).
        """
        self.pod, self.target_port = pod, port
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.check()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            # a response comes in several frames: without this, Nagle holds each later one until
            # the client's delayed ACK (40 ms), which the load would measure as the service's
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._conns_lock:
                self._conns.add(conn)
                self._workers = [t for t in self._workers if t.is_alive()]
                worker = threading.Thread(
                    target=self._serve, args=(conn,), name="perfgate-port-forward-conn", daemon=True
                )
                self._workers.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        ws = None
        try:
            ws = self._open()
            pump(conn, ws, self._closed)
        except Exception as exc:  # one failed connection must not stop the run; load sees it
            if not self._closed.is_set():
                self._log(f"kubernetes: port-forward connection failed: {exc}")
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            if ws is not None:
                close_ws(ws)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._conns_lock:
            conns = list(self._conns)
            workers = list(self._workers)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=2.0)
        for worker in workers:
            worker.join(timeout=2.0)
        with contextlib.suppress(Exception):
            self._client.close()


def close_ws(ws: Any) -> None:
    """Release a websocket and its socket, whoever closed first."""
    # close() skips the socket when the peer closed first; shutdown() always releases it
    with contextlib.suppress(Exception):
        ws.close(timeout=0.1)
    with contextlib.suppress(Exception):
        ws.shutdown()


def pump(conn: socket.socket, ws: Any, closed: threading.Event) -> None:
    """Copy bytes between a local connection and a port-forward websocket until either closes."""
    import ssl

    import websocket

    sel = selectors.DefaultSelector()
    try:
        sel.register(conn, selectors.EVENT_READ)
        sel.register(ws.sock, selectors.EVENT_READ)
        while not closed.is_set():
            for key, _ in sel.select(timeout=0.5):
                if key.fileobj is conn:
                    data = conn.recv(65536)
                    if not data:
                        return
                    ws.send_binary(b"\x00" + data)
                    continue
                while True:  # a TLS record may hold more frames than select() can see
                    opcode, frame = ws.recv_data_frame(True)
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        return
                    if opcode == websocket.ABNF.OPCODE_BINARY and frame.data[:1] == b"\x00":
                        conn.sendall(frame.data[1:])
                    elif opcode == websocket.ABNF.OPCODE_BINARY and len(frame.data) > 1:
                        return  # the error channel spoke: the pod's port refused or went away
                    if not (isinstance(ws.sock, ssl.SSLSocket) and ws.sock.pending()):
                        break
    except (OSError, websocket.WebSocketException):
        return
    finally:
        sel.close()
