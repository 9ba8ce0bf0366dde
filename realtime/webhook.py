"""Webhooks: track events POSTed as signed JSON batches.

Each POST's body is ``{"id": BATCH_ID, "events": [...]}`` (the events of
:mod:`realtime.events`, oldest first, up to ``batch`` of them, gathered for up to
``linger`` seconds after the first). With a secret it
carries ``X-Realtime-Signature: sha256=HEX``, the HMAC-SHA256 of the body's bytes. A
2xx answer delivers the batch; a connection error, a timeout, 408, 429 or 5xx is
retried (the same body and id) with backoff, 0.5 s doubling to 30 s; another 4xx is
the receiver saying no: the batch is dropped and logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from realtime import __version__
from realtime.delivery import Backoff, Outbox
from realtime.errors import RealtimeError
from realtime.sources import mask_credentials

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Realtime-Signature"
RETRIED = frozenset({408, 429})


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


class WebhookOutbox(Outbox):
    """POSTs queued events to ``url`` in batches, one request at a time.

    Args:
        url: http:// or https://.
        secret: signs each body (None: no signature header).
        capacity: events that may wait (the oldest is dropped beyond).
        batch: most events per POST.
        timeout: seconds per request.
        linger: seconds a batch waits for more events after its first (fewer POSTs).
    """

    kind = "webhook"

    def __init__(self, url: str, secret: str | None = None, capacity: int = 1000, batch: int = 100,
                 timeout: float = 5.0, flush_timeout: float = 5.0, linger: float = 0.5):
        shown = mask_credentials(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RealtimeError(f"--webhook {shown}: expected an http:// or https:// URL")
        if secret is not None and len(secret) < 8:
            raise RealtimeError("--webhook-secret: use at least 8 characters")
        super().__init__(shown, capacity, flush_timeout)
        self.url, self.secret, self.batch, self.timeout, self.linger = url, secret, batch, timeout, linger
        self.reachable = True  # until a request says otherwise
        self._holding: list = []
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the URL

    def put_events(self, source: int, events: list[dict]) -> None:
        for event in events:
            self.put(event)

    def pending(self) -> int:
        return len(self.queue) + len(self._holding)

    def _post(self, body: bytes) -> int | str:
        """The status code, or why there is none."""
        headers = {"Content-Type": "application/json", "User-Agent": f"realtime/{__version__}"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        request = urllib.request.Request(self.url, body, headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, ValueError) as e:
            return mask_credentials(str(getattr(e, "reason", None) or e))

    def _send_loop(self) -> None:
        backoff = Backoff()
        while True:
            self._holding = self.take(self.batch, 0.5, self.linger)
            if not self._holding:
                if self.closing:
                    return
                continue
            body = json.dumps({"id": secrets.token_hex(8), "events": self._holding}).encode()
            while True:
                status = self._post(body)
                if isinstance(status, int) and 200 <= status < 300:
                    self.sent += len(self._holding)
                    if not self.reachable:
                        log.warning("webhook %s: delivering again", self.name)
                    self.reachable = True
                    backoff.reset()
                    break
                if isinstance(status, int) and 400 <= status < 500 and status not in RETRIED:
                    self.failures += 1
                    self.dropped += len(self._holding)
                    log.warning("webhook %s: answered %d; dropped a batch of %d events", self.name, status, len(self._holding))
                    break
                self.failures += 1
                delay = backoff.next()
                if self.reachable:
                    log.warning("webhook %s: %s; retrying with backoff, events queued", self.name,
                                f"answered {status}" if isinstance(status, int) else status)
                self.reachable = False
                if self.wait(delay):
                    return  # closing: the batch is not delivered (counted at close)
            self._holding = []
