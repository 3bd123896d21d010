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
