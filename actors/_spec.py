"""Child specifications: how a supervisor starts, restarts and stops each child.

Specs are frozen values. A supervisor reads them; nothing here runs anything. Bad values
are rejected when the spec is made, never clamped.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ._actor import Actor

M = TypeVar("M")

RestartHook = Callable[[str, "Exception | None"], None]
"""A supervisor's ``on_restart``: called with the child's name and why it ended."""

DEFAULT_CAPACITY = 1024
DEFAULT_SHUTDOWN = 5.0


class Restart(enum.Enum):
    """When a child that ended is started again."""

    PERMANENT = "permanent"
    """Always: after a crash and after a normal exit."""
    TRANSIENT = "transient"
    """Only after a crash; a normal exit removes the child."""
    TEMPORARY = "temporary"
    """Never; the child is removed when it ends, however it ends."""


class Strategy(enum.Enum):
    """Which children a supervisor restarts when one of them must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that ended."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped in reverse order, then all start in order."""
    REST_FOR_ONE = "rest_for_one"
    """The child that ended and every child started after it."""


class StopPolicy(enum.Enum):
    """What happens to the messages still queued when an actor stops for good."""

    DRAIN = "drain"
    """Process them (within the shutdown grace period) before stopping."""
    REJECT = "reject"
    """Drop them; each queued ask fails with `ActorStopped`."""


@dataclass(frozen=True, slots=True)
class RestartBackoff:
    """The wait before a restart: ``initial * factor ** (n - 1)``, capped at ``maximum``.

    ``n`` counts the restarts inside the current intensity window, so a child that crashes
    in a loop waits longer each time, and one that crashes once a day restarts at once-ish.

    >>> RestartBackoff(initial=0.1, factor=2.0, maximum=1.0).delay(3)
    0.4
    """

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def __post_init__(self) -> None:
        if not (0 <= self.initial < math.inf):
            raise ValueError(f"backoff initial must be a finite number >= 0, not {self.initial}")
        if not (self.factor >= 1):
            raise ValueError(f"backoff factor must be >= 1, not {self.factor}")
        if not (self.initial <= self.maximum < math.inf):
            raise ValueError(f"backoff maximum must be finite and >= initial, not {self.maximum}")

    def delay(self, n: int) -> float:
        if n < 1:
            raise ValueError(f"restart number starts at 1, not {n}")
        return min(self.maximum, self.initial * self.factor ** (n - 1))


def _check_shutdown(shutdown: float | None) -> None:
    if shutdown is not None and not shutdown >= 0:
        raise ValueError(f"shutdown grace must be >= 0 seconds or None, not {shutdown}")


@dataclass(frozen=True, slots=True)
class ActorSpec(Generic[M]):
    """How to run one actor under a supervisor.

    ``factory`` makes a fresh `Actor` for every incarnation (first start and each restart).
    ``shutdown`` is the grace period, in seconds, that a stopping actor gets before it is
    cancelled; ``None`` waits as long as it takes.
    """

    key: Hashable
    factory: Callable[[], Actor[M]]
    restart: Restart = Restart.PERMANENT
    capacity: int = DEFAULT_CAPACITY
    on_stop: StopPolicy = StopPolicy.DRAIN
    shutdown: float | None = DEFAULT_SHUTDOWN

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, not {self.capacity}")
        _check_shutdown(self.shutdown)


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """A supervisor and its static children, which start in order and stop in reverse.

    Restart intensity: more than ``max_restarts`` restarts within ``within`` seconds (on
    trio's clock) and the supervisor stops its children and fails with `SupervisorGaveUp`,
    leaving the decision to its own supervisor. Every restart attempt counts, a restart
    whose start-up fails included. The backoff paces the restarts, so an intensity that
    the backoff alone keeps out of reach (a child that fails at once would be retried
    for ever) is refused: see `gives_up_after`. A supervisor's ``shutdown`` defaults to
    ``None``: it gets as long as its children's own grace periods take.

    ``on_restart``, if given, is called with a child's name (its path in the tree, such
    as ``"system/workers/w1"``) and the exception it ended with (None after a normal
    exit, or a restart's failed start-up) each time the supervisor restarts that child
    (every restart attempt, counted as for the intensity: the siblings a strategy
    restarts with it are not reported apart). It runs on the supervisor's own task, so
    it must be quick and must not block: count, log, or hand the news on. An error it
    raises is logged and otherwise ignored.
    """

    key: Hashable
    children: Sequence[ChildSpec] = ()
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 3
    within: float = 5.0
    backoff: RestartBackoff = field(default_factory=RestartBackoff)
    restart: Restart = Restart.PERMANENT
    capacity: int = DEFAULT_CAPACITY
    shutdown: float | None = None
    on_restart: RestartHook | None = None

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, not {self.max_restarts}")
        if not 0 < self.within < math.inf:
            raise ValueError(f"within must be > 0 seconds, not {self.within}")
        if self.capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, not {self.capacity}")
        _check_shutdown(self.shutdown)
        keys = [child.key for child in self.children]
        if len(set(keys)) != len(keys):
            raise ValueError(f"child keys must be unique, got {keys!r}")
        if self.gives_up_after is None:
            raise ValueError(
                f"restart intensity out of reach: the backoff alone spreads "
                f"{self.max_restarts} restarts over {self._backoff_total():g} s, not within "
                f"{self.within:g} s, so a child that keeps failing would be restarted for "
                f"ever; raise within, or lower max_restarts or the backoff"
            )

    def _backoff_total(self) -> float:
        return sum(self.backoff.delay(n) for n in range(1, self.max_restarts + 1))

    @property
    def gives_up_after(self) -> float | None:
        """How long a child that fails at once, every time, takes to make this supervisor
        give up: the backoff waits of ``max_restarts`` restarts. None if that is not
        within ``within`` (never: such a spec is refused).

        The k-th restart in a row comes after the waits of the k-1 before it, and a wait
        only grows with the restarts in the window, so ``max_restarts`` restarts fit in
        the window at some point exactly when they fit in it from the first one.

        >>> round(SupervisorSpec("s", max_restarts=3, within=5.0).gives_up_after, 6)
        0.7
        """
        total = self._backoff_total()
        return total if total < self.within else None


ChildSpec = ActorSpec[Any] | SupervisorSpec
