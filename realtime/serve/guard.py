"""Connections of `realtime serve` that hold resources and give nothing back are closed.

uvicorn closes a connection by flushing what it still has to send, so a client that
stopped reading keeps its socket (an fd and megabytes of kernel buffer) for as long as it
likes, and it waits for ever for the headers of a request that never finish. The
:class:`ConnectionGuard` knows each connection (a uvicorn protocol subclass) and:

- :meth:`abort` resets the connection of a request (a viewer dropped as stalled);
- every ``timeout`` seconds, resets a connection that has no request in progress and
  started none since the last look (headers that never finish, an idle socket), so
  no connection sits idle for more than ``2 * timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class ConnectionGuard:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self.connections: dict[tuple, asyncio.Protocol] = {}
        self.closed_idle = 0

    def protocol(self) -> type[asyncio.Protocol]:
        """The HTTP protocol class for ``uvicorn.Config(http=...)``: uvicorn's own, and
        known to this guard."""
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        guard = self

        class Guarded(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
            def connection_made(self, transport) -> None:
                super().connection_made(transport)
                self.guard_key = _key(transport.get_extra_info("peername"))
                self.guard_active = self.guard_started = self.guard_seen = 0
                guard.connections[self.guard_key] = self
                self.guard_timer = self.loop.call_later(guard.timeout, guard._check, self)

            def connection_lost(self, exc) -> None:
                guard.connections.pop(self.guard_key, None)
                self.guard_timer.cancel()
                super().connection_lost(exc)

        return Guarded

    def _check(self, conn) -> None:
        if conn.guard_active == 0 and conn.guard_started == conn.guard_seen:
            self.closed_idle += 1
            log.info("closed a connection that sent no complete request for %.0f s", self.timeout)
            conn.transport.abort()
            return
        conn.guard_seen = conn.guard_started
        conn.guard_timer = conn.loop.call_later(self.timeout, self._check, conn)

    def middleware(self, app):
        """An ASGI wrapper that tells the guard when each connection's requests start and end."""

        async def guarded(scope, receive, send):
            conn = self.connections.get(_key(scope.get("client"))) if scope["type"] == "http" else None
            if conn is None:
                return await app(scope, receive, send)
            conn.guard_active += 1
            conn.guard_started += 1
            try:
                return await app(scope, receive, send)
            finally:
                conn.guard_active -= 1

        return guarded

    def abort(self, scope) -> None:
        """Reset the connection of the request ``scope`` at once (what it had not yet
        sent is dropped: the client stopped reading it)."""
        conn = self.connections.get(_key(scope.get("client")))
        if conn is not None:
            conn.transport.abort()


def _key(address) -> tuple:
    return tuple(address[:2]) if address else ()
