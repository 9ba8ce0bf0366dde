"""MQTT: track events and people counts to a broker (paho-mqtt), Frigate-style topics.

``--mqtt mqtt://[user:pass@]HOST[:PORT][/PREFIX]`` (``mqtts://`` for TLS, port 8883):

- ``PREFIX/available``: ``online`` once connected, ``offline`` at the end or, as the
  broker's last will, when the connection dies; retained.
- ``PREFIX/SOURCE/events``: one JSON object per track event (:mod:`realtime.events`).
- ``PREFIX/SOURCE/counts``: every ``interval`` seconds, retained.

Everything at QoS 1. Messages wait in the :class:`~realtime.delivery.Outbox` queue and
go to paho at most ``window`` unacknowledged at a time; paho resends those after a
reconnect, which it retries with backoff (1 s doubling to 30 s).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from realtime.delivery import Outbox
from realtime.errors import RealtimeError
from realtime.sources import mask_credentials

log = logging.getLogger(__name__)


@dataclass
class BrokerUrl:
    host: str
    port: int
    prefix: str
    tls: bool
    username: str | None = None
    password: str | None = None
    shown: str = ""

    @classmethod
    def parse(cls, url: str) -> "BrokerUrl":
        """``mqtt(s)://[user[:pass]@]host[:port][/prefix]``; one line for a bad one."""
        shown = mask_credentials(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise RealtimeError(f"--mqtt {shown}: {e}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise RealtimeError(f"--mqtt {shown}: expected mqtt://[user:pass@]HOST[:PORT][/PREFIX] (or mqtts:// for TLS)")
        prefix = parts.path.strip("/") or "realtime"
        after_host = url[url.rfind("@") + 1:]
        if any(c in prefix for c in "+#") or "//" in prefix or "#" in after_host or "?" in after_host:
            raise RealtimeError(f"--mqtt {shown}: the topic prefix {prefix!r} may not hold '+', '#', '?' or empty levels")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, port or (8883 if tls else 1883), prefix, tls,
                   unquote(parts.username) if parts.username is not None else None,
                   unquote(parts.password) if parts.password is not None else None, shown)


def _acked(info) -> bool:
    """``MQTTMessageInfo.is_published()`` without its raise for a message handed over
    while the connection was down (paho keeps it and sends it after reconnecting)."""
    with info._condition:
        return info._published


class MqttOutbox(Outbox):
    """One broker connection for every source of a run.

    Args:
        url: see :meth:`BrokerUrl.parse`.
        ca: a CA bundle for ``mqtts://`` (default: the system's).
        connect_timeout: seconds to wait at the start for the broker's answer. Refused
            credentials (or any refusal) raise :class:`RealtimeError`; a broker that does
            not answer is only logged: the run starts and the client keeps trying.
        window: unacknowledged QoS 1 messages handed to paho at a time.
    """

    kind = "mqtt"

    def __init__(self, url: str, ca: str | None = None, capacity: int = 1000, connect_timeout: float = 3.0,
                 window: int = 20, flush_timeout: float = 5.0):
        import paho.mqtt.client as mqtt

        self.broker = BrokerUrl.parse(url)
        super().__init__(self.broker.shown, capacity, flush_timeout)
        self.window = window
        self.connects = 0
        self._inflight: list = []
        self._refused: str | None = None
        self._answered = threading.Event()
        self.available = f"{self.broker.prefix}/available"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"realtime-{os.getpid()}-{secrets.token_hex(3)}",
                             protocol=mqtt.MQTTv311)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            try:
                client.tls_set(ca_certs=ca)
            except (OSError, ValueError) as e:
                raise RealtimeError(f"--mqtt-ca {ca}: {getattr(e, 'strerror', None) or e}") from None
        client.will_set(self.available, "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.max_inflight_messages_set(window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.enable_logger(logging.getLogger(__name__ + ".paho"))
        logging.getLogger(__name__ + ".paho").setLevel(logging.CRITICAL)  # its errors are ours to say, once
        self.client = client
        client.connect_timeout = connect_timeout
        try:  # the first connection here, so a certificate the broker's name fails is one line
            client.connect(self.broker.host, self.broker.port, keepalive=30)
        except ssl.SSLError as e:
            raise RealtimeError(f"--mqtt {self.name}: TLS failed ({e.reason or e}){'' if ca else '; a private CA needs --mqtt-ca'}") from None
        except OSError:
            self.failures += 1
            client.connect_async(self.broker.host, self.broker.port, keepalive=30)  # paho's loop keeps trying
        except ValueError as e:
            raise RealtimeError(f"--mqtt {self.name}: {e}") from None
        client.loop_start()
        if self.failures == 0:
            self._answered.wait(connect_timeout)  # the CONNACK: accepted or refused
        if self._refused is not None:
            self._stop_client()
            raise RealtimeError(f"--mqtt {self.name}: the broker refused the connection ({self._refused})")
        if not self.reachable:
            log.warning("mqtt %s: cannot reach the broker; events are queued (up to %d, then the oldest dropped) "
                        "and it is tried again with backoff (1 s doubling to 30 s)", self.name, capacity)

    def _on_connect(self, client, userdata, flags, reason, properties=None) -> None:
        if reason.is_failure:
            if self.connects == 0 and not self._answered.is_set():
                self._refused = str(reason)
                self._answered.set()
            else:
                self.failures += 1
                log.warning("mqtt %s: the broker refused the connection (%s); retrying", self.name, reason)
            return
        self.connects += 1
        self.reachable = True
        client.publish(self.available, "online", qos=1, retain=True)
        if self.connects > 1:
            log.warning("mqtt %s: reconnected", self.name)
        else:
            log.info("mqtt %s: connected", self.name)
        self._answered.set()
        with self.cond:
            self.cond.notify_all()

    def _on_connect_fail(self, client, userdata) -> None:
        """No connection at all (refused port, unreachable host): paho retries."""
        self.failures += 1
        self._answered.set()  # the start need not wait: it is down

    def _on_disconnect(self, client, userdata, flags, reason, properties=None) -> None:
        if self.reachable and not self.closing:
            self.failures += 1
            log.warning("mqtt %s: lost the broker (%s); reconnecting with backoff, events queued", self.name, reason)
        self.reachable = False

    def put_events(self, source: int, events: list[dict]) -> None:
        for event in events:
            self.put((f"{self.broker.prefix}/{source}/events", json.dumps(event), False))

    def put_counts(self, source: int, counts: dict) -> None:
        self.put((f"{self.broker.prefix}/{source}/counts", json.dumps(counts), True))

    def pending(self) -> int:
        return len(self.queue) + sum(1 for m in self._inflight if not _acked(m))

    def _prune(self) -> None:
        """Count and forget the acknowledged messages."""
        waiting = [m for m in self._inflight if not _acked(m)]
        self.sent += len(self._inflight) - len(waiting)
        self._inflight = waiting

    def _send_loop(self) -> None:
        while True:
            self._prune()
            if not self.reachable or len(self._inflight) >= self.window:
                if self.wait(0.02):
                    return
                continue
            items = self.take(1, 0.5)
            if not items:
                if self.closing:
                    return
                continue
            topic, payload, retain = items[0]
            self._inflight.append(self.client.publish(topic, payload, qos=1, retain=retain))

    def _shutdown(self) -> None:
        self._prune()  # acknowledged since the sender stopped
        if self.reachable:
            try:
                self.client.publish(self.available, "offline", qos=1, retain=True).wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        self._stop_client()

    def _stop_client(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
