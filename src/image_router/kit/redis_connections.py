"""Redis connections that report a dead connection as redis-py's ConnectionError.

Cut off from Redis (a network partition rather than a refused connect), a pooled
connection's transport is closed underneath it. On uvloop, writing to it then raises
`RuntimeError: unable to perform operation on <TCPTransport closed=True ...>` instead of
the `OSError` redis-py turns into its `ConnectionError`; so the client's retry on a fresh
connection never happens, and every caller that falls back to per-process state on a
Redis error (`kit/link.py`) sees an unexpected error instead: the fleet soak's only 500s,
once the partitioned host was back on the network. These classes translate it at the
source, for every client and pool of ours.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError


class _ReportsClosedTransport(AbstractConnection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            # redis-py has already dropped the connection (it does on any failed send).
            raise RedisConnectionError(f"the connection to Redis was lost: {exc}") from exc


class TcpConnection(_ReportsClosedTransport, Connection):
    pass


class TlsConnection(_ReportsClosedTransport, SSLConnection):
    pass


class UnixConnection(_ReportsClosedTransport, UnixDomainSocketConnection):
    pass


def connection_class(url: str) -> type[AbstractConnection]:
    """The class for a `redis://`, `rediss://` or `unix://` URL (as redis-py picks its own)."""
    scheme = url.partition("://")[0].lower()
    if scheme == "rediss":
        return TlsConnection
    if scheme == "unix":
        return UnixConnection
    return TcpConnection
