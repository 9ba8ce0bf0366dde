"""What viewers cost the analysis of `realtime serve`: the benchmark command
``python -m realtime.serve.viewerbench SOURCE`` (the figure the README quotes).

It starts ``realtime serve --loop --no-pace`` on SOURCE (127.0.0.1, a free port) and
measures analysis fps, the server's CPU time per analysed frame and its memory, in
alternating windows with no viewer and with N MJPEG viewers (plus ones that never read
a byte, which the server must drop): the machine's other load drifts, and alternating
cancels most of it. The viewers here are one thread of this process, so on a small
machine part of any drop is their own CPU.
"""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from realtime.errors import RealtimeError


class Viewers:
    """``n`` MJPEG viewers of ``path`` on 127.0.0.1:``port`` that read and discard
    everything on one thread (``parts[i]``: JPEG frames viewer ``i`` got), plus
    ``stalled`` ones that send their request and never read a byte."""

    def __init__(self, port: int, path: str, n: int, stalled: int = 0):
        self.selector = selectors.DefaultSelector()
        self.bytes: dict[int, int] = {}
        self.parts: dict[int, int] = {}
        self.sockets = []
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        for i in range(n + stalled):
            sock = socket.socket()
            if i >= n:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            self.sockets.append(sock)
            if i < n:
                sock.setblocking(False)
                self.selector.register(sock, selectors.EVENT_READ, i)
                self.bytes[i] = self.parts[i] = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.2):
                try:
                    data = key.fileobj.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    self.selector.unregister(key.fileobj)
                    continue
                self.bytes[key.data] += len(data)
                self.parts[key.data] += data.count(b"Content-Type: image/jpeg")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (Linux /proc)."""
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


class _Server:
    """A ``realtime serve`` process on 127.0.0.1 and its /metrics counters."""

    def __init__(self, *args: str, timeout: float = 180):
        command = [sys.executable, "-m", "realtime.cli", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.errors: list[str] = []
        self._stderr = threading.Thread(target=lambda: self.errors.extend(self.proc.stderr), daemon=True)
        self._stderr.start()
        deadline, self.port = time.monotonic() + timeout, None
        for line in self.proc.stdout:
            if line.startswith("serving on "):
                self.port = urlsplit(line.split()[2]).port
                break
            if time.monotonic() > deadline:
                break
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        if self.port is None:
            self.stop()
            self._stderr.join(5)
            said = next((line.strip() for line in reversed(self.errors) if line.strip()), "no message")
            raise RealtimeError(f"realtime serve did not start: {said.removeprefix('error: ')}")

    def metric(self, name: str) -> float:
        import http.client

        from prometheus_client.parser import text_string_to_metric_families

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        return sum(s.value for family in text_string_to_metric_families(body) for s in family.samples
                   if s.name == name and s.labels.get("source") == "0")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench_viewers(source: str, viewers: int = 20, stalled: int = 1, rounds: int = 5, window: float = 3.0) -> dict:
    """Analysis of ``source`` with 0 viewers and with ``viewers`` (+ ``stalled``), in
    ``rounds`` alternating windows of ``window`` seconds -> {"idle"/"watched": fps,
    CPU ms per frame; RSS MB before and at most; fewest frames a viewer got in a
    window; stalled viewers dropped}."""
    if not Path("/proc/self/status").exists():
        raise RealtimeError("the viewer benchmark reads the server's CPU time and memory from /proc (Linux)")
    server = _Server("--source", source, "--loop", "--no-pace", "--stall-timeout", "3")
    totals = {"idle": [0.0, 0.0, 0.0], "watched": [0.0, 0.0, 0.0]}  # frames, seconds, CPU seconds

    def measure(kind: str) -> None:
        start, t0, cpu = server.metric("realtime_frames_total"), time.monotonic(), cpu_seconds(server.proc.pid)
        time.sleep(window)
        totals[kind][0] += server.metric("realtime_frames_total") - start
        totals[kind][1] += time.monotonic() - t0
        totals[kind][2] += cpu_seconds(server.proc.pid) - cpu

    try:
        while server.metric("realtime_frames_total") < 100:  # past the start-up
            if server.proc.poll() is not None:
                raise RealtimeError(f"realtime serve --source {source}: ended before 100 frames")
            time.sleep(0.2)
        rss_before = rss_mb(server.proc.pid)
        never_read = Viewers(server.port, "/api/sources/0/stream.mjpg", 0, stalled=stalled)
        fewest, rss = [], []
        for _ in range(rounds):
            measure("idle")
            watching = Viewers(server.port, "/api/sources/0/stream.mjpg", viewers)
            try:
                time.sleep(1.0)
                measure("watched")
                rss.append(rss_mb(server.proc.pid))
                fewest.append(min(watching.parts.values(), default=0))
            finally:
                watching.close()
        dropped = server.metric("realtime_stalled_viewers_total")
        never_read.close()
    finally:
        server.stop()
    fps = {k: totals[k][0] / totals[k][1] for k in totals}
    return {"viewers": viewers, "stalled": stalled, "rounds": rounds, "window_s": window,
            "fps": fps, "change": fps["watched"] / fps["idle"] - 1,
            "cpu_ms_per_frame": {k: 1e3 * totals[k][2] / max(totals[k][0], 1) for k in totals},
            "rss_mb": {"before": rss_before, "max": max(rss)}, "fewest_frames_a_viewer_got": min(fewest),
            "stalled_dropped": dropped}


def main(argv: list[str] | None = None) -> int:
    """``python -m realtime.serve.viewerbench SOURCE [VIEWERS [STALLED [ROUNDS [WINDOW]]]]``."""
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 5 or args[0].startswith("-"):
        print(main.__doc__.strip("`").replace("``", ""), file=sys.stderr)
        return 2
    try:
        numbers = [int(a) for a in args[1:4]] + [float(a) for a in args[4:5]]
        r = bench_viewers(args[0], *numbers)
    except (RealtimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"analysis fps: 0 viewers {r['fps']['idle']:.1f}, {r['viewers']} viewers + {r['stalled']} stalled "
          f"{r['fps']['watched']:.1f} ({r['change']:+.1%}; {r['rounds']} x {r['window_s']:g} s each); server CPU per frame "
          f"{r['cpu_ms_per_frame']['idle']:.1f} -> {r['cpu_ms_per_frame']['watched']:.1f} ms; server RSS "
          f"{r['rss_mb']['before']:.0f} MB -> {r['rss_mb']['max']:.0f} MB; fewest frames a viewer got in "
          f"{r['window_s'] + 1:g} s: {r['fewest_frames_a_viewer_got']}; stalled viewers dropped: {r['stalled_dropped']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
