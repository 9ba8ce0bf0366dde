"""Track events to a real MQTT broker (Debian's mosquitto on a free 127.0.0.1 port,
started here with its own config file) and to a local webhook server."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, Served, realtime, shared_path

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="needs Debian's mosquitto (apt-get install mosquitto; .ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto listening on 127.0.0.1:``port`` only, no persistence; ``users``
    (name -> password) switches anonymous access off."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None):
        self.port = free_port()
        self.config = folder / "mosquitto.conf"
        # run as whoever runs the tests (as root mosquitto would switch to its own user,
        # who cannot read pytest's private folders)
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"allow_anonymous {'false' if users else 'true'}",
                 f"user {getpass.getuser()}"]
        if users:
            passwords = folder / "passwords"
            passwords.touch()
            for name, password in users.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(passwords), name, password],
                               check=True, capture_output=True)
            passwords.chmod(0o600)
            lines.append(f"password_file {passwords}")
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path)
    yield broker
    broker.stop()


class Subscriber:
    """Every message on ``#`` (topic, text), in arrival order; reconnects by itself."""

    def __init__(self, port: int, auth: tuple[str, str] | None = None):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(0.2, 1)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, r, p: (c.subscribe("#", qos=1), self.subscribed.set())
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode()))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)
        time.sleep(0.2)  # the SUBACK

    def on(self, topic: str) -> list:
        return [json.loads(text) if text.startswith("{") else text for t, text in list(self.messages) if t == topic]

    def wait_for(self, condition, timeout: float = 60, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.messages[-5:]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def events_from_jsonl(path: Path) -> list[tuple]:
    """The track events a JSONL implies, worked out from it alone: per frame the tracks
    gone since the previous frame (end, by id), the new ones (in the file's order), the
    ones whose label or person changed; at the end, every track still in view."""
    out, last, labels = [], {}, {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        faces = {f["track_id"]: f for f in record["faces"]}
        for tid in sorted(set(last) - set(faces)):
            out.append(("end", tid, last[tid][0], labels.pop(tid)))
        changed = []
        for tid, face in faces.items():
            label = (face["age_group"], face["gender"], face.get("person_id"))
            if tid not in labels:
                out.append(("new", tid, record["frame"], label))
            elif labels[tid] != label:
                changed.append(("update", tid, record["frame"], label))
            labels[tid] = label
        out += changed
        last = {tid: (record["frame"], face) for tid, face in faces.items()}
    out += [("end", tid, last[tid][0], labels[tid]) for tid in sorted(last)]
    return out


def as_tuples(events: list[dict]) -> list[tuple]:
    return [(e["event"], e["track_id"], e["frame"], (e["age_group"], e["gender"], e["person_id"])) for e in events]


@needs_mosquitto
@pytest.mark.slow  # real processes
def test_a_files_events_arrive_in_order_and_match_its_jsonl(broker, tmp_path, detector_models):
    subscriber = Subscriber(broker.port)
    try:
        jsonl = tmp_path / "stage.jsonl"
        proc = realtime("annotate", shared_path("media", "stage_360p.mp4"), "-o", tmp_path / "stage.mp4", "--json", jsonl,
                        "--mqtt", f"mqtt://127.0.0.1:{broker.port}/home/cam", "--mqtt-interval", "1",
                        "--reid-model", shared_path("models", "teachers", "hse_faceres.onnx"))
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        subscriber.wait_for(lambda: subscriber.on("home/cam/available")[-1:] == ["offline"], 10, "offline")
    finally:
        subscriber.close()
    events = subscriber.on("home/cam/0/events")
    expected = events_from_jsonl(jsonl)
    assert len(expected) > 20 and {e[0] for e in expected} == {"new", "update", "end"}
    assert as_tuples(events) == expected  # person_id included: each track's person as in the JSONL
    persons = {e["person_id"] for e in events if e["person_id"] is not None}
    assert 0 < len(persons) < len({e["track_id"] for e in events})  # people, fewer than tracks
    frames = {json.loads(line)["frame"]: json.loads(line) for line in jsonl.read_text().splitlines()}
    for e in events:
        face = next(f for f in frames[e["frame"]]["faces"] if f["track_id"] == e["track_id"])
        assert (e["box"], e["age"], e["gender_prob"], e["time"]) == (face["box"], face["age"], face["gender_prob"], frames[e["frame"]]["time"])
        assert e["age_prob"] in face["age_probs"]
        assert e["dwell_seconds"] > 0 and e["source"] == 0
    assert subscriber.on("home/cam/available") == ["online", "offline"]
    counts = subscriber.on("home/cam/0/counts")
    assert len(counts) >= 2 and counts[-1]["frame"] == max(frames)
    summary_people = sum(counts[-1]["people_by_age_group_and_gender"].values())
    assert summary_people == counts[-1]["people"] > 0
    assert "mqtt mqtt://127.0.0.1" in err and "sent" in err


@needs_mosquitto
@pytest.mark.slow  # real processes
def test_a_broker_restarted_mid_run_gets_online_again_later_events_and_the_last_will(broker, detector_models):
    subscriber = Subscriber(broker.port)
    served = Served("--source", shared_path("media", "stage_360p.mp4"), "--loop", "--mqtt", f"mqtt://127.0.0.1:{broker.port}")
    try:
        subscriber.wait_for(lambda: len(subscriber.on("realtime/0/events")) >= 3, 120, "first events")
        broker.stop()
        before = subscriber.on("realtime/0/events")[-1]["frame"]
        served.wait_for(lambda: "lost the broker" in "".join(served.stderr), 30, what="the loss logged")
        frames = served.json("/api/sources")[0]["frames"]
        served.wait_for(lambda: served.json("/api/sources")[0]["frames"] > frames + 30, what="analysis going on without it")
        broker.start()
        subscriber.wait_for(lambda: subscriber.on("realtime/available").count("online") >= 1
                            and any(e["frame"] > before for e in subscriber.on("realtime/0/events")), 90, "events after the restart")
        served.wait_for(lambda: "reconnected" in "".join(served.stderr), 10, what="the reconnection logged")
        status, _, body = served.request("/metrics")
        assert status == 200, "".join(served.stderr)[-3000:]
        metrics = served.metrics()
        assert metrics[("realtime_mqtt_failures_total", ())] >= 1
        assert metrics[("realtime_mqtt_connected", ())] == 1
        assert metrics[("realtime_mqtt_sent_total", ())] >= 1
        subscriber.messages.clear()
        served.proc.kill()  # no goodbye: the broker publishes the last will
        subscriber.wait_for(lambda: "offline" in subscriber.on("realtime/available"), 30, "the last will")
    finally:
        served.stop()
        subscriber.close()


@needs_mosquitto
@pytest.mark.slow  # real processes
def test_wrong_credentials_are_one_line_and_the_password_is_masked(tmp_path, detector_models):
    broker = Broker(tmp_path, users={"alice": "right-password"})
    try:
        proc = realtime("annotate", shared_path("media", "stage_360p.mp4"), "-o", tmp_path / "x.mp4",
                        "--mqtt", f"mqtt://alice:wrong-password@127.0.0.1:{broker.port}")
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1
        assert err.strip().splitlines()[-1] == f"error: --mqtt mqtt://***@127.0.0.1:{broker.port}: the broker refused the connection (Not authorized)"
        assert "Traceback" not in err and "wrong-password" not in err + out
        assert not (tmp_path / "x.mp4").exists()
        subscriber = Subscriber(broker.port, ("alice", "right-password"))  # the right ones work
        subscriber.close()
    finally:
        broker.stop()


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for 127.0.0.1 signed by it (openssl): ca, cert, key."""
    ca, ca_key, cert, key, csr, ext = (folder / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "server.csr", "san.ext"))
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for args in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=realtime test CA"],
                 ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                 ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


@needs_mosquitto
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
@pytest.mark.slow  # real processes
def test_mqtts_with_a_private_ca(tmp_path, detector_models):
    broker = Broker(tmp_path)
    ca, cert, key = certificates(tmp_path)
    tls_port = free_port()
    broker.stop()
    with broker.config.open("a") as config:  # a second listener, TLS, beside the plain one
        config.write(f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    try:
        subscriber = Subscriber(broker.port)
        try:
            proc = realtime("annotate", ROOT / "samples" / "people.mp4", "-o", tmp_path / "p.mp4",
                            "--mqtt", f"mqtts://127.0.0.1:{tls_port}/tls", "--mqtt-ca", ca)
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            subscriber.wait_for(lambda: subscriber.on("tls/available")[-1:] == ["offline"], 10, "offline")
        finally:
            subscriber.close()
        assert subscriber.on("tls/available") == ["online", "offline"] and subscriber.on("tls/0/events")
        # without the CA the broker's certificate is not trusted: one line, before any work
        proc = realtime("annotate", ROOT / "samples" / "people.mp4", "-o", tmp_path / "q.mp4",
                        "--mqtt", f"mqtts://127.0.0.1:{tls_port}/tls")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1 and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith(f"error: --mqtt mqtts://127.0.0.1:{tls_port}/tls: TLS failed (CERTIFICATE_VERIFY_FAILED)")
    finally:
        broker.stop()


def test_an_unreachable_broker_never_blocks_the_loop(detector_models):
    """Nothing listens on the port: every put returns at once, the queue stays at its
    capacity and the oldest are dropped and counted; closing does not wait."""
    from realtime.mqtt import MqttOutbox

    outbox = MqttOutbox(f"mqtt://127.0.0.1:{free_port()}", capacity=100, connect_timeout=5)
    outbox.attach()
    for k in range(5000):
        outbox.put_events(0, [{"event": "new", "track_id": k}])
    assert len(outbox.queue) == 100 and outbox.dropped == 4900 and not outbox.reachable
    assert outbox.failures >= 1
    assert [json.loads(item[1])["track_id"] for item in outbox.queue] == list(range(4900, 5000))
    outbox.detach()
    assert outbox.pending() == 100


def test_mqtt_urls_are_checked_in_one_line():
    from realtime.errors import RealtimeError
    from realtime.mqtt import BrokerUrl

    url = BrokerUrl.parse("mqtts://bob:p%40ss@broker.example:9999/a/b/")
    assert (url.host, url.port, url.prefix, url.tls, url.username, url.password) == ("broker.example", 9999, "a/b", True, "bob", "p@ss")
    assert BrokerUrl.parse("mqtt://h").port == 1883 and BrokerUrl.parse("mqtt://h").prefix == "realtime"
    for bad, says in (("http://h", "expected mqtt://"), ("mqtt://h/a/#", "may not hold"), ("mqtt://u:pw@h:99999", "out of range")):
        with pytest.raises(RealtimeError, match=says) as e:
            BrokerUrl.parse(bad)
        assert "pw" not in str(e.value)


# -- webhooks


class Receiver:
    """An HTTP server on 127.0.0.1 that answers POSTs with the next of ``statuses``
    (then 200) and records (status, headers, body) of each."""

    def __init__(self, statuses: list[int] = ()):
        self.statuses = list(statuses)
        self.requests: list[tuple[int, dict, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict]:
        return [json.loads(body) for status, _, body in self.requests if status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow  # real processes
def test_webhook_batches_are_signed_and_hold_the_runs_events(tmp_path, detector_models):
    receiver = Receiver()
    try:
        jsonl = tmp_path / "stage.jsonl"
        secret = "a-long-webhook-secret"
        proc = realtime("annotate", shared_path("media", "stage_360p.mp4"), "-o", tmp_path / "stage.mp4", "--json", jsonl,
                        "--webhook", receiver.url, "--webhook-secret", secret,
                        "--reid-model", shared_path("models", "teachers", "hse_faceres.onnx"))
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    finally:
        receiver.close()
    assert receiver.requests
    for status, headers, body in receiver.requests:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Realtime-Signature"], expected)
        assert headers["Content-Type"] == "application/json"
    events = [e for batch in receiver.accepted() for e in batch["events"]]
    assert as_tuples(events) == events_from_jsonl(jsonl)  # person_id included
    assert any(e["event"] == "update" and e["person_id"] is not None for e in events)  # re-identified tracks
    assert secret not in err


def test_a_batch_answered_500_is_retried_and_delivered_once():
    from realtime.webhook import WebhookOutbox, verify

    receiver = Receiver([500])
    try:
        outbox = WebhookOutbox(receiver.url, "secret-of-the-test")
        outbox.attach()
        outbox.put_events(0, [{"event": "new", "track_id": k} for k in range(5)])
        deadline = time.monotonic() + 30
        while outbox.sent < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        outbox.detach()
    finally:
        receiver.close()
    assert [status for status, _, _ in receiver.requests] == [500, 200]
    (_, _, first), (_, headers, second) = receiver.requests
    assert first == second and verify("secret-of-the-test", second, headers["X-Realtime-Signature"])
    assert receiver.accepted() == [{"id": json.loads(second)["id"], "events": [{"event": "new", "track_id": k} for k in range(5)]}]
    assert (outbox.sent, outbox.failures, outbox.dropped, outbox.pending()) == (5, 1, 0, 0)


def test_a_dead_webhook_server_never_blocks_the_loop():
    """A server that accepts connections and never answers holds the sender; the loop's
    puts all return at once and the queue stays bounded, oldest dropped."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    from realtime.webhook import WebhookOutbox

    try:
        outbox = WebhookOutbox(f"http://127.0.0.1:{silent.getsockname()[1]}/", capacity=200, timeout=30, flush_timeout=0.5)
        outbox.attach()
        deadline = time.monotonic() + 10
        while not outbox._holding and time.monotonic() < deadline:  # the sender is stuck in its first POST
            outbox.put_events(0, [{"event": "new", "track_id": -1}])
            time.sleep(0.01)
        for k in range(10000):
            outbox.put_events(0, [{"event": "new", "track_id": k}])
        assert len(outbox.queue) == 200 and outbox.queue[-1]["track_id"] == 9999 and outbox.dropped >= 9800
        outbox.detach()
        assert outbox.pending() >= 200  # not delivered, and said so
    finally:
        silent.close()


def test_webhook_options_are_checked():
    from realtime.errors import RealtimeError
    from realtime.webhook import WebhookOutbox

    with pytest.raises(RealtimeError, match=r"expected an http:// or https:// URL"):
        WebhookOutbox("ftp://127.0.0.1/x")
    with pytest.raises(RealtimeError, match="at least 8"):
        WebhookOutbox("http://127.0.0.1/x", "short")
