"""Session states already read, per process, valid for one version of their session.

A GET of a session that has not changed since the last GET skips reading and validating its
transcript: the service still reads the session's version and tenant (and audits the read),
and reuses the cached reply only if the version is the same. Every change bumps the version,
so a cached state is never served after it is stale. Entries also expire after ``ttl_s``: an
erased session's text is dropped at once by the process that erased it, and leaves the memory
of every other worker within ``ttl_s``, though no request can reach it meanwhile (the read of
the version finds no session first).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from app.sessions.schemas import SessionDetail


class DetailCache:
    """An LRU of ``SessionDetail`` by session id; ``maxsize=0`` disables it."""

    def __init__(
        self, *, maxsize: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._maxsize = maxsize
        self._ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[uuid.UUID, tuple[float, SessionDetail]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, session_id: uuid.UUID, version: int) -> SessionDetail | None:
        """The cached state of exactly this version, if fresh."""
        entry = self._data.get(session_id)
        if entry is None:
            return None
        expires, detail = entry
        if expires <= self._clock() or detail.version != version:
            del self._data[session_id]
            return None
        self._data.move_to_end(session_id)
        return detail

    def put(self, session_id: uuid.UUID, detail: SessionDetail) -> None:
        if self._maxsize <= 0:
            return
        self._data[session_id] = (self._clock() + self._ttl_s, detail)
        self._data.move_to_end(session_id)
        while len(self._data) > self._maxsize:
            self._data.popitem(last=False)

    def drop(self, session_id: uuid.UUID) -> None:
        self._data.pop(session_id, None)
