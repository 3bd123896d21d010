"""The sweeper: the actor that deletes finished jobs past their retention, off the hot
path, on its own timer.

Every `SWEEP_EVERY` seconds it asks each running space to sweep one batch (`SweepJobs`,
`BATCH` jobs at most): the space reads which of its finished jobs are past their
retention (a bounded read by index) and has them deleted, with their events, logs and
callbacks, through the one store writer, like any of its writes. A space whose batch was
full has more: the sweeper comes back at once, after its mailbox has had a turn, rather
than holding any space for a long delete. See docs/persistence.md, "Retention".
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NamedTuple

import trio

import actors

from .domain.commands import SweepJobs
from .domain.settings import Retention
from .errors import EmitError

if TYPE_CHECKING:
    from .runtime import Runtime

SWEEP_EVERY = 10.0
"""Seconds between sweeps when the last found no full batch: a job outlives its
retention by this much at most (but for a backlog)."""
BATCH = 500
"""Jobs deleted at most in one write of a space: a few milliseconds of the writer's."""
RECLAIM_PAGES = 256
"""Free pages (1 MiB of 4 KiB pages) given back to the file system with each batch, at
most, on a database made with ``auto_vacuum = INCREMENTAL`` (a batch of 500 jobs frees
about a hundred): the file then shrinks when the load or the retention goes down. On an
older database the freed pages stay on SQLite's freelist, and new jobs take them."""
SWEEP_TIMEOUT = 60.0

log = logging.getLogger("emit.sweeper")


class Swept(NamedTuple):
    """What one sweep did."""

    deleted: int
    """Jobs deleted, across the spaces."""
    more: bool
    """A space's batch was full: it may have more past their retention."""


async def sweep_spaces(
    runtime: Runtime, defaults: Retention, *, limit: int = BATCH, reclaim: int = RECLAIM_PAGES
) -> Swept:
    """Ask each running space to sweep one batch, one space after the other. A space
    that is restarting or failing is skipped: the next sweep finds it."""
    deleted, more = 0, False
    for key in runtime.spaces.children():
        ref = runtime.spaces.whereis(key)
        if not isinstance(ref, actors.ActorRef) or ref.stopped:
            continue
        try:
            n: int = await ref.ask(SweepJobs(defaults, limit, reclaim), timeout=SWEEP_TIMEOUT)
        except (actors.ActorError, EmitError) as exc:
            log.info("space %s was not swept this time: %s", key, exc)
            continue
        deleted += n
        more = more or n >= limit
    return Swept(deleted, more)


class Sweeper(actors.Actor[None]):
    """Sweeps on its timer (`wakeup_at`), every ``every`` seconds; handles no messages."""

    def __init__(self, runtime: Runtime, defaults: Retention, every: float = SWEEP_EVERY) -> None:
        self.runtime = runtime
        self.defaults = defaults
        self.every = every
        self.next_at = trio.current_time() + every
        self.deleted = 0
        """Jobs deleted by this incarnation."""

    def wakeup_at(self) -> float:
        return self.next_at

    async def wakeup(self) -> None:
        swept = await sweep_spaces(self.runtime, self.defaults)
        self.deleted += swept.deleted
        if swept.deleted:
            log.debug("swept %d finished jobs past their retention", swept.deleted)
        self.next_at = trio.current_time() + (0.0 if swept.more else self.every)

    async def receive(self, message: None) -> None:
        return None
