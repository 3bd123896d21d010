"""Identifiers: ULIDs for spaces, jobs and tokens; secret keys and their hashes."""

from __future__ import annotations

import hashlib
import secrets

from ulid import ULID

KEY_PREFIX = "emit_"
PUBLIC_PREFIX = "emit_pub_"
ADMIN_PREFIX = "emit_admin_"


def new_id(wall: float) -> str:
    """A ULID whose time part is ``wall`` (epoch seconds), so ids sort by creation."""
    return str(ULID.from_timestamp(wall))


def id_bound(wall: float) -> str:
    """A string above every id made up to ``wall`` and below every id made in a later
    millisecond (the time part of a ULID is its first ten characters)."""
    return _base32(max(int(wall * 1000) + 1, 0), 5)


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits → 2 characters


def _base32(value: int, pairs: int) -> str:
    """``value`` as ``2 * pairs`` Crockford base32 characters, most significant first."""
    out = []
    for _ in range(pairs):
        out.append(_PAIRS[value & 1023])
        value >>= 10
    return "".join(reversed(out))


class MonotonicIds:
    """ULIDs that sort in the order they were made, even within one millisecond: the
    random part of a ULID made in the same millisecond as the last one is the last one's
    plus one. One generator per space actor, so a space's job ids sort by creation.

    Made by hand rather than through python-ulid: ids are made twice per job (the job and
    each lease), and this is several times cheaper (see bench/engine.py)."""

    __slots__ = ("_last_ms", "_last_random", "_prefix")

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0
        self._prefix = ""
        """All but the last two characters of the last id: the time, and the random part
        but for its low 10 bits, which is all that a +1 changes 1,023 times in 1,024."""

    def next(self, wall: float) -> str:
        ms = int(wall * 1000)
        if ms > self._last_ms:
            self._last_ms = ms
            value = self._last_random = int.from_bytes(secrets.token_bytes(10)) >> 1
            # 48 bits of time: 10 characters (the top 2 bits of the first are zero).
            self._prefix = _base32(ms, 5) + _base32(value >> 10, 7)
        else:
            value = self._last_random = (self._last_random + 1) & _RANDOM_MASK
            if not value & 1023:  # a carry into the upper bits
                self._prefix = self._prefix[:10] + _base32(value >> 10, 7)
        return self._prefix + _PAIRS[value & 1023]


_RANDOM_MASK = (1 << 80) - 1


def new_key(prefix: str = KEY_PREFIX) -> str:
    """A secret key: the prefix and 43 random url-safe characters (256 bits)."""
    return prefix + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """SHA-256 of a key, hex: enough for random keys, and all the store ever keeps."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_display_prefix(key: str) -> str:
    """The non-secret start of a key shown in listings: its prefix and 6 characters."""
    for prefix in (ADMIN_PREFIX, PUBLIC_PREFIX, KEY_PREFIX):
        if key.startswith(prefix):
            return key[: len(prefix) + 6]
    return key[:6]
