"""A small supervised-actor runtime on Trio. It knows nothing about jobs.

Actors handle one message at a time from a bounded mailbox; refs survive restarts;
supervisors restart children by strategy and stop them in reverse order; a system runs
inside any Trio program's nursery. See docs/actors.md.
"""

from ._actor import DEFAULT_ASK_TIMEOUT, Actor, ActorRef, Context, Request
from ._mailbox import MailboxStatistics
from ._reply import Reply
from ._spec import (
    ActorSpec,
    ChildSpec,
    Restart,
    RestartBackoff,
    StopPolicy,
    Strategy,
    SupervisorSpec,
)
from ._supervisor import SupervisorRef
from ._system import ActorSystem, open_system
from .errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    AskTimeout,
    ChildNotFound,
    ChildStartFailed,
    DuplicateChild,
    MailboxFull,
    SupervisionError,
    SupervisorGaveUp,
)

__all__ = [
    "DEFAULT_ASK_TIMEOUT",
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorSpec",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "ChildNotFound",
    "ChildSpec",
    "ChildStartFailed",
    "Context",
    "DuplicateChild",
    "MailboxFull",
    "MailboxStatistics",
    "Reply",
    "Request",
    "Restart",
    "RestartBackoff",
    "StopPolicy",
    "Strategy",
    "SupervisionError",
    "SupervisorGaveUp",
    "SupervisorRef",
    "SupervisorSpec",
    "open_system",
]
