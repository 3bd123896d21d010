"""Making spaces and tokens: the records to write, from validated input. Shared by the
runtime (and so the HTTP API) and the command line, which writes them to the data
directory directly, even while a server runs on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .domain import scopes as scope_rules
from .domain.model import unicode_text
from .domain.records import Space, Token
from .errors import InvalidRequest
from .ids import KEY_PREFIX, PUBLIC_PREFIX, hash_key, key_display_prefix, new_id, new_key


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token as made: ``key`` is shown this once and never stored."""

    id: str
    space_id: str
    name: str
    scopes: frozenset[str]
    key: str
    created_at: float


def check_name(name: object) -> str:
    """A space's or a token's name: 1 to 200 characters of Unicode text."""
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise InvalidRequest("name must be a string of 1 to 200 characters", field="name")
    return unicode_text(name, "name")


def make_space(name: object, now: float) -> tuple[Space, Token]:
    """A new space and the token record of its public key."""
    space = Space(new_id(now), check_name(name), new_key(PUBLIC_PREFIX), now, {})
    public = Token(
        new_id(now),
        space.id,
        "public",
        key_display_prefix(space.public_token),
        hash_key(space.public_token),
        scope_rules.PUBLIC,
        now,
        public=True,
    )
    return space, public


def make_token(
    space_id: str,
    name: object,
    scopes: Sequence[str] | None,
    preset: str | None,
    now: float,
) -> tuple[Token, NewToken]:
    """The record to store (hash only) and what the caller is shown once (the key)."""
    check_name(name)
    if scopes is not None and (
        not isinstance(scopes, list | tuple) or not all(isinstance(s, str) for s in scopes)
    ):
        raise InvalidRequest("scopes must be a list of scope names", field="scopes")
    if preset is not None and not isinstance(preset, str):
        raise InvalidRequest("preset must be a string", field="preset")
    granted = scope_rules.for_token(scopes, preset)
    key = new_key(KEY_PREFIX)
    assert isinstance(name, str)
    token = Token(new_id(now), space_id, name, key_display_prefix(key), hash_key(key), granted, now)
    return token, NewToken(token.id, space_id, name, granted, key, now)
