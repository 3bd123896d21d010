"""Small actors the runtime tests share. Each records what happens to it in a `Journal`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

import actors


@dataclass
class Journal:
    """What happened, in order, across every actor of a test."""

    entries: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, *entry: str) -> None:
        self.entries.append(entry)

    def of(self, kind: str) -> list[str]:
        return [entry[1] for entry in self.entries if entry[0] == kind]


class Crash(Exception):
    """Raised on purpose by test actors."""


class Worker(actors.Actor[object]):
    """Counts messages; ``"crash"`` (a tell) crashes it, ``"fail"`` raises, ``"count"``
    answers the count, ``("sleep", s)`` sleeps, ``"stop"`` stops it normally."""

    def __init__(self, name: str, journal: Journal, *, stop_delay: float = 0) -> None:
        self.name = name
        self.journal = journal
        self.count = 0
        self.stop_delay = stop_delay

    async def started(self) -> None:
        self.journal.add("start", self.name)

    async def receive(self, message: object) -> object:
        match message:
            case "crash":
                raise Crash(self.name)
            case "fail":
                raise Crash(f"{self.name} failed the ask")
            case "count":
                return self.count
            case "incarnation":
                return self.context.incarnation
            case "stop":
                self.context.stop()
            case ("sleep", float(seconds)):
                await trio.sleep(seconds)
                self.count += 1
            case _:
                self.count += 1
                self.journal.add("got", self.name, repr(message))
        return None

    async def stopped(self) -> None:
        if self.stop_delay:
            await trio.sleep(self.stop_delay)
        self.journal.add("stop", self.name)


def worker(name: str, journal: Journal, stop_delay: float = 0) -> Callable[[], Worker]:
    return lambda: Worker(name, journal, stop_delay=stop_delay)


def spec(
    name: str, journal: Journal, stop_delay: float = 0, **options: Any
) -> actors.ActorSpec[object]:
    return actors.ActorSpec(name, worker(name, journal, stop_delay), **options)


async def settle() -> None:
    """Let every task run until all are blocked (supervisors restarting, and so on)."""
    await trio.testing.wait_all_tasks_blocked()
