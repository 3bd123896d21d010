"""Who is calling: a key from ``x-api-key`` or ``Authorization: Bearer`` (or a WebSocket's
``?token=``) becomes a `Caller` — the admin, or a key of one space with its scopes.

Keys are looked up through `Runtime.authenticate`, the one way a key becomes a token;
this adds the admin key and a cache, and notes each use of a space's key
(`Runtime.note_key_use`: in memory, written in batches). A found key is remembered for ``cache_seconds``
(trio time), so the hot path does not read SQLite on every request, and a key revoked
through another process (the CLI) stops working within that time; one revoked through
this server's API stops at once. Unknown keys are never remembered, so a key made by the
CLI works on its first use.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import trio

from ..domain.settings import read_settings
from ..errors import NotFound, Unauthorized
from ..ids import hash_key
from ..runtime import Runtime


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    """The token id, or "admin": what the rate limit counts against."""
    space_id: str | None
    scopes: frozenset[str]
    admin: bool = False
    key_hash: str = ""
    """The SHA-256 the key was looked up by (the store's name for it)."""
    rate: float | None = None
    """Its space's ``rateLimit`` setting, requests a second (None: the server's)."""


ADMIN = Caller("admin", None, frozenset(), admin=True)
SCRAPER = Caller("metrics", None, frozenset())
"""Whoever holds the metrics token: ``GET /metrics`` and nothing else."""


def key_from_headers(x_api_key: str | None, authorization: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class Authenticator:
    def __init__(
        self,
        runtime: Runtime,
        admin_key: str | None,
        cache_seconds: float,
        metrics_token: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.admin_hash = None if admin_key is None else hash_key(admin_key)
        self.metrics_hash = None if metrics_token is None else hash_key(metrics_token)
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Caller, float]] = {}
        """Key hash → the caller it made and when it was read from the store."""

    async def caller(self, key: str | None) -> Caller:
        if key is None:
            raise Unauthorized("no key: send x-api-key or Authorization: Bearer")
        digest = hash_key(key)
        if self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash):
            return ADMIN
        now = trio.current_time()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self.cache_seconds:
            self.runtime.note_key_use(cached[0].key_id)
            return cached[0]
        token = await self.runtime.authenticate(key)
        if token is None:
            self._cache.pop(digest, None)
            raise Unauthorized("unknown or revoked key")
        try:
            space = await self.runtime.get_space(token.space_id)
        except NotFound:  # deleted meanwhile: its requests find it gone
            rate = None
        else:
            rate = read_settings(space.settings).rate_limit
        caller = Caller(token.id, token.space_id, token.scopes, key_hash=digest, rate=rate)
        self.runtime.note_key_use(token.id)
        if self.cache_seconds > 0:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (caller, now)
        return caller

    def scraper(self, key: str | None) -> Caller:
        """The caller of ``GET /metrics``: the metrics token or the admin key, compared
        in constant time; anything else is 401 (a space's key included: the store is
        never asked)."""
        if key is None:
            raise Unauthorized("no key: send Authorization: Bearer with the metrics token")
        digest = hash_key(key)
        if self.metrics_hash is not None and hmac.compare_digest(digest, self.metrics_hash):
            return SCRAPER
        if self.admin_hash is not None and hmac.compare_digest(digest, self.admin_hash):
            return ADMIN
        raise Unauthorized("not the metrics token nor the admin key")

    def forget(self, token_id: str) -> None:
        """A token was revoked here: stop honouring it at once."""
        for digest in [d for d, (c, _) in self._cache.items() if c.key_id == token_id]:
            del self._cache[digest]

    def forget_space(self, space_id: str) -> None:
        """The space was deleted, or its settings changed: read its keys afresh."""
        for digest in [d for d, (c, _) in self._cache.items() if c.space_id == space_id]:
            del self._cache[digest]
