"""Where generated outputs live.

A `Store` keeps bytes under a name and answers a public URL for it. Names are chosen by the
caller (the generation id, unguessable, plus an index and an extension), so a URL cannot be
guessed from another one.
"""

from __future__ import annotations

from typing import Protocol


class StorageError(Exception):
    """The store could not save, read or delete an object."""


class Store(Protocol):
    async def put(self, name: str, data: bytes, content_type: str) -> str:
        """Save `data` under `name`; return the public URL that serves it."""
        ...

    async def get(self, name: str) -> tuple[bytes, str] | None:
        """The bytes and content type stored under `name`, or None."""
        ...

    async def delete(self, name: str) -> None:
        """Remove `name`; removing a missing object is not an error."""
        ...

    def url_for(self, name: str) -> str:
        """The public URL of `name` (whether or not it exists)."""
        ...

    async def check(self) -> None:
        """A cheap probe for `/ready`: raise StorageError when outputs cannot be stored."""
        ...

    async def close(self) -> None:
        """Release clients and connections."""
        ...
