"""Benchmark of the actor runtime, run by hand from the project root:
``.venv/bin/python -m bench.actors`` (as a module, so ``import actors`` finds the runtime).

Measures, in one run on the same machine:
  * tell throughput (messages/s): one producer ``await ref.send(n)`` into one actor,
    beside the raw rate of a trio memory channel of the same capacity doing the same;
  * ask round-trip latency (p50/p99, microseconds): sequential asks to one actor.
Targets (issue 2): tell >= 50% of the raw channel rate; ask p50 < 50 us.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio

import actors
from bench.client import percentile

CAPACITY = 1024


class Sink(actors.Actor[object]):
    def __init__(self, total: int, done: trio.Event) -> None:
        self.total = total
        self.done = done
        self.seen = 0

    async def receive(self, message: object) -> object:
        self.seen += 1
        if self.seen == self.total:
            self.done.set()
        return message


async def raw_channel_rate(n: int) -> float:
    send, receive = trio.open_memory_channel[int](CAPACITY)

    async def consume() -> None:
        seen = 0
        async for _ in receive:
            seen += 1
            if seen == n:
                return

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for i in range(n):
            await send.send(i)
    return n / (time.perf_counter() - start)


async def tell_rate(n: int) -> float:
    done = trio.Event()
    async with actors.open_system("bench") as system:
        ref = await system.spawn(lambda: Sink(n, done), capacity=CAPACITY)
        start = time.perf_counter()
        for i in range(n):
            await ref.send(i)
        await done.wait()
        elapsed = time.perf_counter() - start
    return n / elapsed


async def ask_latencies(n: int) -> list[float]:
    samples: list[float] = []
    async with actors.open_system("bench") as system:
        ref = await system.spawn(lambda: Sink(-1, trio.Event()), capacity=CAPACITY)
        for i in range(1000):  # warm up
            await ref.ask(i)
        for i in range(n):
            start = time.perf_counter_ns()
            await ref.ask(i)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def main(messages: int, asks: int, rounds: int) -> None:
    raw, tell = [], []
    for _ in range(rounds):  # interleaved, so drift on the machine hits both alike
        raw.append(await raw_channel_rate(messages))
        tell.append(await tell_rate(messages))
    latencies = await ask_latencies(asks)
    raw_best, tell_best = max(raw), max(tell)
    print(f"raw trio memory channel : {raw_best:12,.0f} msg/s  (best of {rounds})")
    print(f"actor tell (send)       : {tell_best:12,.0f} msg/s  (best of {rounds})")
    print(f"tell / raw              : {tell_best / raw_best:12.0%}   target >= 50%")
    print(
        f"ask round trip          : p50 {percentile(latencies, 0.50):.1f} us, "
        f"p99 {percentile(latencies, 0.99):.1f} us, mean {statistics.mean(latencies):.1f} us "
        f"over {asks:,} asks   target p50 < 50 us"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--asks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.messages, args.asks, args.rounds)
