"""The event hub: fan-out of durable job events to WebSocket subscribers.

Space actors publish each batch of events once its write has committed, by a plain
synchronous call that never blocks: a subscriber gets a bounded queue, and one whose
queue is full is cut off (the socket closes with 1013) rather than allowed to grow
memory or slow the space. Each space keeps a gap-free ``seq`` for its stream and a
bounded buffer of recent messages, so a dashboard that reconnects with ``since`` and
the same ``streamInstanceId`` gets what it missed; otherwise it is told ``missed``.

The hub is per runtime, not global; its instance id changes with every start, since the
buffer does not survive one.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from ..domain.model import Published
from ..isotime import stamp

SUBSCRIBER_QUEUE = 1024
SUBSCRIBER_BYTES = 1 << 20
"""A subscriber is cut off once it has more than SUBSCRIBER_QUEUE messages *and* more
than SUBSCRIBER_BYTES of them waiting: a burst of small messages (a create of 1000
jobs is 1000 at once) does not cut off a client that keeps up, and a stream's memory
stays bounded by whichever bound is larger."""
SUBSCRIBER_MAX = 1 << 16
"""Messages waiting at most, whatever their size."""
REPLAY_BUFFER = 2000
"""Messages per space kept for reconnecting streams."""
FINAL = frozenset({"completed", "dead", "killed"})


class SpaceMessage:
    """One message of a space stream. Its JSON text is made when a stream first sends it,
    then shared by every stream that does (and by replays): a space nobody streams only
    counts and buffers its events."""

    __slots__ = ("_text", "event", "seq")

    def __init__(self, seq: int, event: Published) -> None:
        self.seq = seq
        self.event = event
        self._text: str | None = None

    def text(self) -> str:
        if self._text is None:
            event = self.event
            self._text = orjson.dumps(
                {
                    "type": event.type,
                    "seq": self.seq,
                    "jobId": event.job_id,
                    "jobName": event.job_name,
                    "status": event.status,
                    "attemptNumber": event.attempt_number,
                    "data": event.data,
                    "timestamp": stamp(event.timestamp),
                }
            ).decode()
        return self._text


class JobMessage:
    """One event as the job streams show it, rendered at most once per view (full or
    stripped), however many streams of the job send it."""

    __slots__ = ("_full", "_stripped", "event")

    def __init__(self, event: Published) -> None:
        self.event = event
        self._full: str | None = None
        self._stripped: str | None = None

    def text(self, full: bool) -> str:
        """Full: with ``data``. Stripped (a progress-only key): ``data`` only on
        ``progress`` (spec §6)."""
        if full or self.event.type == "progress":
            if self._full is None:
                self._full = self._render(True)
            return self._full
        if self._stripped is None:
            self._stripped = self._render(False)
        return self._stripped

    def _render(self, with_data: bool) -> str:
        event = self.event
        message: dict[str, Any] = {
            "type": event.type,
            "jobId": event.job_id,
            "status": event.status,
            "attemptNumber": event.attempt_number,
            "timestamp": stamp(event.timestamp),
        }
        if with_data:
            message["data"] = event.data
        return orjson.dumps(message).decode()


@dataclass(frozen=True, slots=True)
class Key:
    """A stream's key: the token's id and the SHA-256 of the key (what the store looks
    up), so a revocation made by another process can be found too."""

    token_id: str
    key_hash: str


@dataclass(eq=False, slots=True)
class Subscription:
    """One WebSocket's queue. ``close_code`` is set when the hub ends it."""

    send: trio.MemorySendChannel[Any]
    receive: trio.MemoryReceiveChannel[Any]
    space_id: str
    job_id: str | None
    full: bool
    """True for keys with jobs:read: data and log lines; False strips data (§6)."""
    key: Key | None = None
    """The key the socket was opened with: revoking it ends the socket."""
    close_code: int | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    limit: int = SUBSCRIBER_QUEUE
    limit_bytes: int = SUBSCRIBER_BYTES
    waiting_bytes: int = 0
    """The size of the messages offered and not yet taken."""

    def offer(self, message: Any, size: int) -> None:
        if self.close_code is not None:
            return
        waiting = self.send.statistics().current_buffer_used
        if waiting >= self.limit and self.waiting_bytes >= self.limit_bytes:
            self.end(1013)  # too slow: cut off, rather than grow without bound
            return
        try:
            self.send.send_nowait(message)
        except trio.WouldBlock:
            self.end(1013)
            return
        self.waiting_bytes += size

    def taken(self, text: str) -> None:
        """The stream took a message of this text off its queue."""
        self.waiting_bytes -= len(text)

    def end(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            self.scope.cancel()


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """The hub at one moment (`EventHub.statistics`)."""

    space_streams: int
    """Open space streams."""
    job_streams: int
    """Open job streams."""


@dataclass(slots=True)
class _Feed:
    seq: int = 0
    buffer: deque[SpaceMessage] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER))
    streams: set[Subscription] = field(default_factory=set)
    jobs: dict[str, set[Subscription]] = field(default_factory=dict)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription of the space, space streams and job streams (a copy)."""
        return [*self.streams, *(s for watchers in self.jobs.values() for s in watchers)]


class EventHub:
    def __init__(
        self, *, queue_size: int = SUBSCRIBER_QUEUE, queue_bytes: int = SUBSCRIBER_BYTES
    ) -> None:
        self.instance_id = secrets.token_hex(8)
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self._feeds: dict[str, _Feed] = {}

    def seq(self, space_id: str) -> int:
        """The seq of the space's last stream message (0 before any)."""
        feed = self._feeds.get(space_id)
        return 0 if feed is None else feed.seq

    def watched(self, space_id: str) -> bool:
        """Whether anyone ever streamed this space (else publishing is skipped)."""
        return space_id in self._feeds

    def publish(self, space_id: str, events: list[Published]) -> None:
        feed = self._feeds.get(space_id)
        if feed is None:
            return
        for event in events:
            if event.type != "log":
                feed.seq += 1
                entry = SpaceMessage(feed.seq, event)
                feed.buffer.append(entry)
                if feed.streams:
                    size = len(entry.text())
                    for stream in list(feed.streams):
                        stream.offer(entry, size)
            watchers = feed.jobs.get(event.job_id)
            if watchers:
                message = JobMessage(event)
                for subscription in list(watchers):
                    subscription.offer(message, len(message.text(subscription.full)))

    def subscribe_space(
        self,
        space_id: str,
        full: bool,
        since: int | None,
        instance: str | None,
        key: Key | None = None,
    ) -> tuple[Subscription, int, bool, list[SpaceMessage]]:
        """A space stream: the subscription, the current seq, whether the client missed
        events it cannot be given, and the messages to replay first."""
        feed = self._feeds.setdefault(space_id, _Feed())
        subscription = self._subscription(space_id, None, full, key)
        feed.streams.add(subscription)
        missed, replay = False, []
        if since is not None:
            oldest = feed.buffer[0].seq if feed.buffer else feed.seq + 1
            if instance != self.instance_id or since < oldest - 1 or since > feed.seq:
                missed = True
            else:
                replay = [message for message in feed.buffer if message.seq > since]
        return subscription, feed.seq, missed, replay

    def subscribe_job(
        self, space_id: str, job_id: str, full: bool, key: Key | None = None
    ) -> Subscription:
        feed = self._feeds.setdefault(space_id, _Feed())
        subscription = self._subscription(space_id, job_id, full, key)
        feed.jobs.setdefault(job_id, set()).add(subscription)
        return subscription

    def _subscription(
        self, space_id: str, job_id: str | None, full: bool, key: Key | None
    ) -> Subscription:
        send, receive = trio.open_memory_channel[Any](max(self.queue_size, SUBSCRIBER_MAX))
        return Subscription(
            send, receive, space_id, job_id, full, key,
            limit=self.queue_size, limit_bytes=self.queue_bytes,
        )  # fmt: skip

    def unsubscribe(self, subscription: Subscription) -> None:
        feed = self._feeds.get(subscription.space_id)
        if feed is None:
            return
        feed.streams.discard(subscription)
        if subscription.job_id is not None:
            watchers = feed.jobs.get(subscription.job_id)
            if watchers is not None:
                watchers.discard(subscription)
                if not watchers:
                    del feed.jobs[subscription.job_id]

    def statistics(self) -> HubStatistics:
        """How many streams are open now, counted as asked (for a scrape: never on the
        publishing path)."""
        feeds = self._feeds.values()
        return HubStatistics(
            sum(len(feed.streams) for feed in feeds),
            sum(len(watchers) for feed in feeds for watchers in feed.jobs.values()),
        )

    def _all(self) -> list[Subscription]:
        return [s for feed in self._feeds.values() for s in feed.subscriptions()]

    def open_keys(self) -> set[Key]:
        """The keys of the open streams."""
        return {s.key for s in self._all() if s.key is not None and s.close_code is None}

    def end_key(self, token_id: str, code: int = 4401) -> int:
        """End every stream opened with token ``token_id`` (it was revoked); how many."""
        ended = [s for s in self._all() if s.key is not None and s.key.token_id == token_id]
        for subscription in ended:
            subscription.end(code)
        return len(ended)

    def end_all(self, code: int) -> None:
        """End every subscription (server shutdown: 1001; space deleted: 1000)."""
        for subscription in self._all():
            subscription.end(code)

    def forget_space(self, space_id: str) -> None:
        feed = self._feeds.pop(space_id, None)
        if feed is not None:
            for subscription in feed.subscriptions():
                subscription.end(1000)
