"""The run's outside integrations (``--mqtt``, ``--webhook``) as sink factories.

:func:`open_outboxes` connects them (before any analysis, so refused credentials are
one line at the start) and :func:`event_sinks` gives the run one
:class:`~realtime.events.EventSink` per source and outbox. Use it as::

    with Integrations(IntegrationSettings(mqtt="mqtt://127.0.0.1/home")) as integrations:
        run(["0"], sinks=integrations.sinks)
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from realtime.delivery import Outbox
from realtime.events import EventSink

log = logging.getLogger(__name__)


@dataclass
class IntegrationSettings:
    """Attributes:
    mqtt: ``mqtt(s)://[user:pass@]HOST[:PORT][/PREFIX]`` (None: no MQTT).
    mqtt_interval: seconds between counts messages (0: none).
    mqtt_ca: CA bundle for ``mqtts://`` (None: the system's).
    webhook: an http(s) URL to POST event batches to (None: none).
    webhook_secret: signs each POST (``X-Realtime-Signature``; None: unsigned).
    """

    mqtt: str | None = None
    mqtt_interval: float = 10.0
    mqtt_ca: str | None = None
    webhook: str | None = None
    webhook_secret: str | None = None


class Integrations(contextlib.AbstractContextManager):
    """The outboxes of a run, connected, and their sink factories (``sinks``); leaving
    the ``with`` closes any the run did not (e.g. it failed before its first frame)."""

    def __init__(self, settings: IntegrationSettings | None):
        self.settings = settings or IntegrationSettings()
        self.outboxes: list[Outbox] = []
        try:
            if self.settings.mqtt:
                from realtime.mqtt import MqttOutbox

                self.outboxes.append(MqttOutbox(self.settings.mqtt, ca=self.settings.mqtt_ca))
            if self.settings.webhook:
                from realtime.webhook import WebhookOutbox

                self.outboxes.append(WebhookOutbox(self.settings.webhook, self.settings.webhook_secret))
        except BaseException:
            self.close()
            raise

    @property
    def sinks(self) -> list:
        """One :data:`realtime.wiring.SinkFactory` per outbox."""
        return [self._factory(outbox) for outbox in self.outboxes]

    def _factory(self, outbox: Outbox):
        interval = self.settings.mqtt_interval

        def make(source, analyzer, k: int, analytics) -> EventSink:
            if not analyzer.tracking:
                log.warning("%s: no track events without tracking (--no-track, or photos): only counts are sent", outbox.kind)
            return EventSink(outbox, analyzer.meta, k, 1.0 / source.fps if source.fps else 0.0, interval, analytics)

        return make

    def close(self) -> None:
        for outbox in self.outboxes:
            outbox.close()

    def __exit__(self, *exc) -> None:
        self.close()
