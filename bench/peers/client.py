"""The closed-loop load client: C connections, each sending its next request when the last one answers.

    PYTHONPATH=bench python -m peers.client < spec.json > window.json

A process of its own, standard library only: one thread, non-blocking keep-alive sockets under
`selectors` (epoll), each request sent as prebuilt bytes, each response framed by Content-Length
(or a chunked body's last chunk), so that on a 2-core machine it costs a small, measured share of
a core. One run is a warm-up followed by one measured window. At the window's edges it samples the
server's process tree CPU time, the machine's CPU (/proc/stat), the load average and its own CPU
time; at its end, the server tree's memory. Only requests that finish inside the window count.

The spec (JSON on stdin): host, port, request_file (the whole HTTP request), images_per_request,
concurrency, warmup_s, window_s, server_pid; drain_s (how long to wait for requests in flight
after the window, default 60).
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from pathlib import Path
from typing import Any

from peers.procstat import busy_fraction, loadavg, machine_cpu, tree_cpu, tree_memory

RECEIVE = 1 << 20


class Connection:
    """One keep-alive connection and the response it is reading."""

    __slots__ = ("address", "body_start", "buffer", "busy", "chunked", "length", "sent_at", "sock")

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.busy = False
        self._reset()

    def _reset(self) -> None:
        self.buffer.clear()
        self.body_start = -1
        self.length = -1
        self.chunked = False

    def open(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._reset()

    def feed(self, data: bytes) -> tuple[int, bool, bytes] | None:
        """Add received bytes; when the response is whole: (status, connection-close, head sample)."""
        self.buffer += data
        if self.body_start < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            self.body_start = end + 4
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                self.length = int(head[at + 17 : stop if stop >= 0 else None])
            else:
                self.chunked = b"\r\ntransfer-encoding: chunked" in head
                self.length = 0
        if self.chunked:
            if not self.buffer.endswith(b"\r\n0\r\n\r\n"):
                return None
        elif len(self.buffer) < self.body_start + self.length:
            return None
        status = int(self.buffer[9:12])
        head = bytes(self.buffer[: self.body_start]).lower()
        sample = b"" if status == 200 else bytes(self.buffer[:300])
        self._reset()
        return status, b"\r\nconnection: close" in head, sample


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive the server as `spec` says and return what the window measured."""
    request = Path(spec["request_file"]).read_bytes()
    address = (spec["host"], int(spec["port"]))
    concurrency = int(spec["concurrency"])
    pid = int(spec["server_pid"])
    drain = float(spec.get("drain_s", 60.0))
    selector = selectors.DefaultSelector()
    connections = [Connection(address) for _ in range(concurrency)]

    def send(connection: Connection, now: float) -> None:
        for attempt in (1, 2):
            if connection.sock is None:
                selector.register(connection.open(), selectors.EVENT_READ, connection)
            assert connection.sock is not None
            connection.sent_at = now
            connection.busy = True
            try:
                connection.sock.sendall(request)
                return
            except OSError:
                # The server closed an idle keep-alive connection: open a new one, once.
                selector.unregister(connection.sock)
                connection.close()
                if attempt == 2:
                    raise

    finished: list[float] = []
    latencies: list[float] = []
    errors = 0
    error_sample = ""
    chunked_seen = False

    begun = time.perf_counter()
    window_start = begun + float(spec["warmup_s"])
    window_end = window_start + float(spec["window_s"])
    for idle in connections:
        send(idle, time.perf_counter())
    in_flight = concurrency
    start_sample: dict[str, Any] | None = None
    end_sample: dict[str, Any] | None = None

    def sample(starting: bool) -> dict[str, Any]:
        # The client's own clock is read on the window's side of the /proc scans, so they are not in it.
        before = time.process_time()
        found = {
            "at": time.perf_counter(),
            "server": tree_cpu(pid),
            "machine": machine_cpu(),
            "load": loadavg(),
        }
        found["client"] = time.process_time() if starting else before
        return found

    while in_flight:
        now = time.perf_counter()
        if start_sample is None and now >= window_start:
            start_sample = sample(starting=True)
        if end_sample is None and now >= window_end:
            end_sample = sample(starting=False)
        if end_sample is not None and now > window_end + drain:
            break
        wake = window_start if start_sample is None else window_end if end_sample is None else now + 0.5
        for key, _ in selector.select(timeout=max(0.0, min(wake - now, 0.5))):
            connection: Connection = key.data
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(RECEIVE)
            except ConnectionError:
                data = b""
            now = time.perf_counter()
            if not data and not connection.busy:
                # The server closed a keep-alive connection left idle after the window: no error.
                selector.unregister(sock)
                connection.close()
                continue
            if not data:
                connection.busy = False
                selector.unregister(sock)
                connection.close()
                errors += 1
                error_sample = error_sample or "connection closed by the server mid-response"
                done = None
            else:
                done = connection.feed(data)
                if done is None:
                    continue
                connection.busy = False
                status, close, head = done
                chunked_seen = chunked_seen or connection.chunked
                if status == 200:
                    finished.append(now)
                    latencies.append(now - connection.sent_at)
                else:
                    errors += 1
                    error_sample = error_sample or head.decode("latin-1")
                if close:
                    selector.unregister(sock)
                    connection.close()
            # Until the end sample is taken, keep every connection busy (a request sent after the
            # window's last instant is drained like the others, and not counted).
            if end_sample is None:
                send(connection, now)
            else:
                in_flight -= 1
    for idle in connections:
        idle.close()
    if start_sample is None or end_sample is None:
        raise RuntimeError("the window never ended: the server stopped answering")

    seconds = end_sample["at"] - start_sample["at"]
    inside = [
        latency
        for at, latency in zip(finished, latencies, strict=True)
        if start_sample["at"] <= at <= end_sample["at"]
    ]
    inside.sort()
    server_cpu = end_sample["server"].seconds_since(start_sample["server"])
    client_cpu = end_sample["client"] - start_sample["client"]
    images = len(inside) * int(spec["images_per_request"])
    memory = tree_memory(pid)
    return {
        "seconds": seconds,
        "requests": len(inside),
        "images": images,
        "errors": errors,
        "error_sample": error_sample,
        "requests_per_s": len(inside) / seconds,
        "images_per_s": images / seconds,
        "p50_ms": _percentile(inside, 50) * 1000,
        "p99_ms": _percentile(inside, 99) * 1000,
        "server_cpu_s": server_cpu,
        "server_cores": server_cpu / seconds,
        "server_cpu_ms_per_image": server_cpu * 1000 / images if images else None,
        "client_cpu_s": client_cpu,
        "client_cores": client_cpu / seconds,
        "client_cpu_ms_per_request": client_cpu * 1000 / len(inside) if inside else None,
        "machine_busy": busy_fraction(start_sample["machine"], end_sample["machine"]),
        "loadavg_start": start_sample["load"],
        "loadavg_end": end_sample["load"],
        "server_rss_bytes": memory.rss_bytes,
        "server_pss_bytes": memory.pss_bytes,
        "server_processes": memory.processes,
        "chunked_responses": chunked_seen,
        "unfinished_after_drain": in_flight,
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation (numpy's default), of values sorted ascending."""
    if not sorted_values:
        return float("nan")
    rank = (len(sorted_values) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def main() -> int:
    json.dump(run(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
