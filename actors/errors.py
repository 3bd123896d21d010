"""Every error the actor runtime raises, in one place.

The hierarchy, and whose fault each one is::

    ActorError                      base of everything below
    ├── MailboxFull                 the sender's: tell_nowait() found the mailbox at capacity;
    │                               back off, or use ``await ref.send()`` to wait for room
    ├── ActorStopped                nobody's: the actor is stopped (or stopping) for good, so the
    │                               message was not delivered or its reply will never come
    ├── ActorCrashed                the actor's: the incarnation holding the request ended
    │                               before it replied and the actor lives on (restarted);
    │                               ``__cause__`` is the crash when there was one
    ├── AskTimeout                  also a TimeoutError: no reply within the ask's timeout; a
    │                               message still queued is dropped, one the actor already took
    │                               may still be processed
    └── SupervisionError            a supervisor refused or failed a request
        ├── DuplicateChild          start_child() named a key that is already taken
        ├── ChildNotFound           stop_child() named a key the supervisor does not have
        ├── ChildStartFailed        a child's ``started()`` raised while it was being started;
        │                           ``__cause__`` is the child's exception
        └── SupervisorGaveUp        restart intensity exceeded: the supervisor stopped its
                                    children and failed; its own supervisor decides what next

An exception raised by an actor while handling an ``ask`` is not wrapped: the asker gets
that very exception, and the actor lives on. An exception raised while handling a ``tell``
crashes the actor, and its supervisor decides. Cancellation and ``KeyboardInterrupt`` are
never caught by the runtime.
"""

from __future__ import annotations

from collections.abc import Hashable


class ActorError(Exception):
    """Base class of every error the actor runtime raises."""


class MailboxFull(ActorError):
    """``tell_nowait`` found the mailbox at capacity; nothing was queued."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(f"mailbox of {name} is full ({capacity} messages queued)")
        self.name = name
        self.capacity = capacity


class ActorStopped(ActorError):
    """The actor is stopped for good: the message was not delivered, or its reply is lost."""

    def __init__(self, name: str) -> None:
        super().__init__(f"actor {name} is stopped")
        self.name = name


class ActorCrashed(ActorError):
    """The incarnation holding this request ended (crashed or was restarted) before it
    replied; the actor itself lives on, so the request may be sent again."""

    def __init__(self, name: str) -> None:
        super().__init__(f"actor {name} restarted before it replied")
        self.name = name


class AskTimeout(ActorError, TimeoutError):
    """No reply came within the ask's timeout. A message still in the mailbox is never
    delivered; one the actor had already taken may still be processed."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"actor {name} did not reply within {timeout:g} s")
        self.name = name
        self.timeout = timeout


class SupervisionError(ActorError):
    """A supervisor refused or failed a request."""


class DuplicateChild(SupervisionError):
    """``start_child`` named a key that the supervisor already has."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(f"a child with key {key!r} already exists")
        self.key = key


class ChildNotFound(SupervisionError):
    """``stop_child`` named a key that the supervisor does not have."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(f"no child with key {key!r}")
        self.key = key


class ChildStartFailed(SupervisionError):
    """A child failed during start-up; ``__cause__`` holds its exception."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(f"child {key!r} failed to start")
        self.key = key


class SupervisorGaveUp(SupervisionError):
    """More restarts than the intensity allows; ``__cause__`` is the last child failure."""

    def __init__(self, name: str, key: Hashable, restarts: int, within: float) -> None:
        super().__init__(
            f"supervisor {name} gave up: child {key!r} needed more than "
            f"{restarts} restarts in {within:g} s"
        )
        self.name = name
        self.key = key
        self.restarts = restarts
        self.within = within
