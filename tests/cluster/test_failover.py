"""Failover and fencing with real nodes on one PostgreSQL database: kill -9 a node under
load, many times, and lose no acknowledged change, never hold a job by two live leases,
and send every completed job's callback; pause a node past its lease and find its late
writes refused by the fence; and how long a killed node's space waits for its next
owner. The load goes through random nodes, as clients would through a load balancer, and
retries what a move answers (503 with Retry-After, or a connection refused)."""

from __future__ import annotations

import functools
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from emit.store.records import EventRow, job_events
from tests.cluster.conftest import connect, until
from tests.cluster.nodes import Cluster, Node
from tests.cluster.test_nodes import make_space

LEASE = 1.5
PRIVATE = "--allow-private-callbacks"
LATE = 10
"""Requests sent to a paused node, to be answered when it resumes."""
RETRY_PAUSE = 0.1
"""Seconds a client of these tests waits before it retries a 503 or a lost connection
(shorter than the Retry-After it is told: the tests want to see the move end)."""
ENDS = ("delivery_timeout", "retried", "completed", "dead", "killed")


def check_leases(job_id: str, events: list[str]) -> None:
    """Replay a job's history: a delivery only while no lease is live."""
    leased = False
    for kind in events:
        if kind == "delivered":
            assert not leased, f"job {job_id} held by two live leases: {events}"
            leased = True
        elif kind in ENDS:
            leased = False


def histories(database_url: str) -> dict[str, tuple[str, list[str]]]:
    """Every job in the database: its status and its events' types, in order (their
    seqs checked gap-free)."""
    with connect(database_url) as conn:
        rows: dict[str, list[EventRow]] = {}
        for row in conn.execute("SELECT * FROM job_events ORDER BY job_id, seq"):
            rows.setdefault(row[0], []).append(row)
        found = {}
        for job, status, text in conn.execute("SELECT id, status, events FROM jobs"):
            events = job_events(text, rows.get(job, []))
            seqs = [event.seq for event in events]
            assert seqs == list(range(1, len(seqs) + 1)), f"job {job}'s history has a gap"
            found[job] = (status, [str(event.type) for event in events])
    return found


def owner(database_url: str, space: str) -> tuple[str, int] | None:
    """The node holding the space's live lease, and its epoch."""
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT node_id, epoch FROM space_owners"
            " WHERE space_id = %s AND expires_at > clock_timestamp()",
            (space,),
        ).fetchone()
    return None if row is None else (row[0], row[1])


class Receiver:
    """A webhook receiver on a loopback port: counts the callbacks of each job."""

    def __init__(self) -> None:
        got: Counter[str] = Counter()
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                except ValueError:  # cut short: its sender was killed as it sent it
                    self.send_response(400)
                else:
                    with lock:
                        got[body["jobId"]] += 1
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.got = got
        self.lock = lock
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.got)


class Clients:
    """HTTP through a random live node, retrying what a move answers. The nodes' list
    changes as the test kills and restarts them."""

    def __init__(self, nodes: list[Node]) -> None:
        self.lock = threading.Lock()
        self.urls = [node.url for node in nodes]
        self.moved = 0  # 503s seen
        self.unreachable = 0  # connections refused or cut

    def set_nodes(self, nodes: list[Node]) -> None:
        with self.lock:
            self.urls = [node.url for node in nodes]

    def request(
        self,
        http: httpx.Client,
        rng: random.Random,
        method: str,
        path: str,
        key: str,
        body: Any,
        stop: Callable[[], bool],
    ) -> httpx.Response | None:
        """The first answer that is not a 503, or None once ``stop()`` is true."""
        while not stop():
            with self.lock:
                url = rng.choice(self.urls)
            try:
                answer = http.request(method, url + path, json=body, headers={"x-api-key": key})
            except httpx.TransportError:
                with self.lock:
                    self.unreachable += 1
            else:
                if answer.status_code != 503:
                    return answer
                assert "retry-after" in answer.headers, answer.text
                with self.lock:
                    self.moved += 1
            time.sleep(RETRY_PAUSE)
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def test_kill_9_under_load_loses_no_acknowledged_change(
    database_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    rng = random.Random(20261203)
    with Cluster(database_url, tmp_path, lease=LEASE) as cluster:
        nodes = cluster.start(3, PRIVATE)
        spaces = [make_space(nodes[i % 3]) for i in range(4)]
        clients = Clients(nodes)
        stopping = threading.Event()
        created: dict[str, str] = {}  # idempotency key -> job id
        completed: set[str] = set()
        record = threading.Lock()
        failures: list[BaseException] = []

        def produce(seed: int, space: str, key: str) -> None:
            mine = random.Random(seed)
            with httpx.Client(timeout=10, trust_env=False) as http:
                n = 0
                while not stopping.is_set():
                    n += 1
                    idem = uuid.uuid4().hex
                    body = {"name": "w", "payload": {"n": n}, "callbackUrl": receiver.url,
                            "idempotencyKey": idem, "timeoutSeconds": 3, "maxRetries": 20}  # fmt: skip
                    answer = clients.request(
                        http, mine, "POST", f"/api/v1/spaces/{space}/jobs", key, body,
                        stopping.is_set,
                    )  # fmt: skip
                    if answer is None:
                        return
                    assert answer.status_code in (200, 201), answer.text
                    with record:
                        created[idem] = answer.json()["id"]
                    time.sleep(0.02)  # a steady load, not a flood: 2 cores, 3 nodes

        def work(seed: int, space: str, key: str) -> None:
            mine = random.Random(seed)
            with httpx.Client(timeout=10, trust_env=False) as http:
                while not stopping.is_set():
                    answer = clients.request(
                        http, mine, "POST", f"/api/v1/spaces/{space}/jobs/poll", key,
                        {"count": 5, "wait": 1, "ack": True}, stopping.is_set,
                    )  # fmt: skip
                    if answer is None:
                        return
                    assert answer.status_code == 200, answer.text
                    for job in answer.json()["jobs"]:
                        done = clients.request(
                            http, mine, "POST", f"/api/v1/jobs/{job['id']}/complete", key,
                            {"result": job["payload"], "leaseId": job["leaseId"]},
                            stopping.is_set,
                        )  # fmt: skip
                        if done is None:
                            return
                        if done.status_code == 200:
                            with record:
                                completed.add(job["id"])
                        else:  # its lease ran out (or moved with a node) meanwhile
                            assert done.status_code == 409, done.text

        def guarded(target: Callable[..., None], *args: Any) -> Callable[[], None]:
            def run() -> None:
                try:
                    target(*args)
                except BaseException as exc:
                    failures.append(exc)
                    stopping.set()

            return run

        threads = [
            threading.Thread(target=guarded(role, i, space, keys[k]), daemon=True)
            for i, (space, *keys) in enumerate(spaces)
            for role, k in ((produce, 0), (work, 1))
        ]
        for thread in threads:
            thread.start()

        def grown(by: int) -> None:
            with record:
                target = len(completed) + by
            until(lambda: failures or len(completed) >= target, 30, f"{by} more completions")

        kills = 0
        for _ in range(10):
            grown(rng.randint(5, 40))
            victim = rng.choice(nodes)
            cluster.kill(victim)  # SIGKILL, mid-write as likely as not
            kills += 1
            nodes = [node for node in nodes if node is not victim]
            clients.set_nodes(nodes)
            if rng.random() < 0.5:  # its spaces move to the others before it is back
                grown(rng.randint(5, 20))
            nodes += cluster.start(1, PRIVATE, name=victim.name)
            clients.set_nodes(nodes)
        grown(10)
        stopping.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not failures, failures

        # Settled: every space served again, through every node.
        def served() -> bool:
            for space, _, worker in spaces:
                for node in nodes:
                    got = httpx.get(f"{node.url}/api/v1/spaces/{space}/stats",
                                    headers={"x-api-key": worker}, timeout=10)  # fmt: skip
                    if got.status_code != 200:
                        return False
            return True

        until(served, 20, "every space served through every node")
        jobs = histories(database_url)
        assert created, "nothing was created: the test proved nothing"
        assert completed
        lost = set(created.values()) - jobs.keys()
        assert not lost, f"acknowledged creates lost: {lost}"
        assert len(set(created.values())) == len(created), "two keys made one job"
        for job_id in completed:
            status, events = jobs[job_id]
            assert status == "completed", (job_id, status, events)
            assert events.count("completed") == 1, (job_id, events)
        for job_id, (_, events) in jobs.items():
            check_leases(job_id, events)
        finished = {job_id for job_id, (status, _) in jobs.items() if status == "completed"}
        until(
            lambda: finished <= receiver.counts().keys(),
            30,
            f"callbacks of {len(finished - receiver.counts().keys())} completed jobs",
        )
        counts = receiver.counts()
        duplicates = sum(count - 1 for count in counts.values())
        print(
            f"\n{kills} kills: {len(created)} jobs created, {len(completed)} completed by the"
            f" workers ({len(finished)} in all), {clients.moved} answers 503,"
            f" {clients.unreachable} connections lost, {duplicates} duplicate callbacks"
            f" ({sum(1 for c in counts.values() if c > 1)} jobs)"
        )


def space_owner(database_url: str, space: str, nodes: list[Node]) -> tuple[Node, int]:
    held = until(lambda: owner(database_url, space), 10, f"an owner of {space}")
    return next(node for node in nodes if node.name == held[0]), held[1]


def test_a_paused_owner_s_late_writes_are_refused_by_the_fence(
    database_url: str, tmp_path: Path
) -> None:
    with Cluster(database_url, tmp_path, lease=LEASE) as cluster:
        nodes = cluster.start(3)
        space, producer, worker = make_space(nodes[0])
        paused, epoch = space_owner(database_url, space, nodes)
        others = [node for node in nodes if node is not paused]
        jobs = f"/api/v1/spaces/{space}/jobs"
        with httpx.Client(timeout=30, trust_env=False) as http:
            made = http.post(others[0].url + jobs, json={"name": "w", "timeoutSeconds": 60},
                             headers={"x-api-key": producer})  # fmt: skip
            assert made.status_code == 201, made.text
            job = made.json()["id"]
            # A worker takes it from the owner itself, then the owner stops dead.
            polled = http.post(paused.url + jobs + "/poll", json={"ack": True, "wait": 5},
                               headers={"x-api-key": worker})  # fmt: skip
            assert [j["id"] for j in polled.json()["jobs"]] == [job], polled.text
            lease = polled.json()["jobs"][0]["leaseId"]
            cluster.pause(paused)
            late: list[httpx.Response | BaseException] = []

            def complete_late() -> None:
                try:
                    late.append(http.post(f"{paused.url}/api/v1/jobs/{job}/complete",
                                          json={"result": "late", "leaseId": lease},
                                          headers={"x-api-key": worker}))  # fmt: skip
                except BaseException as exc:
                    late.append(exc)

            def create_late(n: int) -> None:
                try:
                    late.append(http.post(paused.url + jobs,
                                          json={"name": "late", "idempotencyKey": f"late-{n}"},
                                          headers={"x-api-key": producer}))  # fmt: skip
                except BaseException as exc:
                    late.append(exc)

            # Sent into the paused node's socket: it answers them when resumed.
            senders = [threading.Thread(target=complete_late, daemon=True)]
            senders += [
                threading.Thread(target=create_late, args=(n,), daemon=True) for n in range(LATE)
            ]
            for sender in senders:
                sender.start()
            claimed = until(
                lambda: (held := owner(database_url, space)) and held[0] != paused.name and held,
                10,
                "another node claiming the space",
            )
            assert claimed[1] > epoch

            # The new owner has the job, running under the lease the paused node gave
            # (durable before the pause), and the worker completes it there. A request
            # forwarded before the routing saw the claim waits on the paused node: the
            # client gives up on it, and tries again.
            def complete() -> Any:
                try:
                    done = http.post(f"{others[0].url}/api/v1/jobs/{job}/complete",
                                     json={"result": "on time", "leaseId": lease},
                                     headers={"x-api-key": worker}, timeout=2)  # fmt: skip
                except httpx.TransportError:
                    return False
                assert done.status_code in (200, 503), done.text
                return done.status_code == 200

            until(complete, 10, "the job completed through another node")
            # The paused node still holds the job running in its memory: resumed, it
            # takes the late complete, and the fence refuses its write (or, its lease
            # lost first, it answers that the space moved, or reloads it and finds the
            # job completed).
            cluster.resume(paused)
            for sender in senders:
                sender.join(timeout=30)
            assert len(late) == LATE + 1, late
            answers: Counter[str] = Counter()
            made_late = set()
            for answer in late:
                assert isinstance(answer, httpx.Response), answer
                if answer.status_code == 201:  # taken afresh, once the node held it again
                    made_late.add(answer.json()["id"])
                else:
                    assert answer.status_code in (409, 503), answer.text
                    assert answer.status_code == 409 or "retry-after" in answer.headers
                answers[
                    f"{answer.status_code} {answer.json().get('error', {}).get('message')}"
                ] += 1
            print("\nthe late requests' answers:", dict(answers))

            # The resumed node goes on serving: forwarding the space, or owning it again
            # at a newer epoch.
            def read_through_paused() -> Any:
                try:
                    got = http.get(f"{paused.url}/api/v1/jobs/{job}",
                                   headers={"x-api-key": producer}, timeout=2)  # fmt: skip
                except httpx.TransportError:
                    return False
                return got.status_code == 200 and got.json()

            assert (
                until(read_through_paused, 10, "the job read through the resumed node")["result"]
                == "on time"
            )
            assert paused.proc.poll() is None, "\n".join(paused.lines)
            now = owner(database_url, space)
            assert now is not None and now[1] > epoch
        found = histories(database_url)
        assert made_late <= found.keys()
        status, events = found[job]
        assert status == "completed"
        assert events.count("completed") == 1, events
        check_leases(job, events)
        with connect(database_url) as conn:
            row = conn.execute("SELECT result FROM jobs WHERE id = %s", (job,)).fetchone()
        assert row is not None and json.loads(row[0]) == "on time", row


def poll_served(
    http: httpx.Client, rng: random.Random, urls: list[str], space: str, worker: str
) -> bool:
    """Whether a poll through one of the nodes at ``urls`` was given a job."""
    try:
        answer = http.post(f"{rng.choice(urls)}/api/v1/spaces/{space}/jobs/poll",
                           json={"wait": 0}, headers={"x-api-key": worker})  # fmt: skip
    except httpx.TransportError:
        return False
    return answer.status_code == 200 and bool(answer.json()["jobs"])


def grew(items: list[Any], by: int) -> Callable[[], bool]:
    """Whether ``items`` has grown by ``by`` since now."""
    start = len(items)
    return lambda: len(items) >= start + by


def test_a_killed_owner_s_space_is_served_again_within_a_lease(
    database_url: str, tmp_path: Path
) -> None:
    took: list[float] = []
    with Cluster(database_url, tmp_path, lease=LEASE) as cluster:
        nodes = cluster.start(3)
        for _ in range(3):
            space, producer, worker = make_space(nodes[0])
            victim, _ = space_owner(database_url, space, nodes)
            others = [node for node in nodes if node is not victim]
            with httpx.Client(timeout=10, trust_env=False) as http:
                made = http.post(f"{others[0].url}/api/v1/spaces/{space}/jobs",
                                 json={"name": "w"}, headers={"x-api-key": producer})  # fmt: skip
                assert made.status_code == 201, made.text
                cluster.kill(victim)
                killed = time.monotonic()
                rng = random.Random(len(took))
                urls = [node.url for node in others]
                poll = functools.partial(poll_served, http, rng, urls, space, worker)
                until(poll, 15, "a poll on the moved space")
                took.append(time.monotonic() - killed)
            nodes = [*others, *cluster.start(1, name=victim.name)]
    print(f"\nfailover (kill → first poll served), lease {LEASE} s: "
          + ", ".join(f"{t:.2f} s" for t in took))  # fmt: skip
    # A lease, a tick of the new owner's, a refresh of the routing node's, and a margin.
    assert max(took) < LEASE + 2 * LEASE / 3 + 2.5, took


def paused_inside_a_write(database_url: str) -> bool:
    """Whether a node's write transaction stands open, idle, holding its fence: its
    node was paused between the fence and COMMIT."""
    with connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.relation = 'space_owners'::regclass"
            " AND a.state = 'idle in transaction' AND a.pid <> pg_backend_pid()"
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_node_paused_inside_a_write_does_not_hold_its_space(
    database_url: str, tmp_path: Path
) -> None:
    """A node stopped between its fence and its COMMIT holds the lease row's lock: the
    next owner's claim must not wait on it for as long as the node stays stopped."""
    with Cluster(database_url, tmp_path, lease=LEASE) as cluster:
        nodes = cluster.start(3)
        space, producer, _ = make_space(nodes[0])
        paused, epoch = space_owner(database_url, space, nodes)
        made: list[httpx.Response | BaseException] = []
        keys: list[str] = []
        stopping = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30, trust_env=False) as http:
                while not stopping.is_set():
                    try:
                        key = f"k{len(made)}"
                        keys.append(key)
                        made.append(http.post(f"{paused.url}/api/v1/spaces/{space}/jobs",
                                              json={"name": "w", "idempotencyKey": key},
                                              headers={"x-api-key": producer}))  # fmt: skip
                    except BaseException as exc:
                        made.append(exc)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        caught = False
        try:
            for _ in range(40):
                until(grew(made, 3), 10, "creates on the owner")
                cluster.pause(paused)
                try:
                    until(lambda: paused_inside_a_write(database_url), 0.3, "caught")
                except AssertionError:
                    cluster.resume(paused)
                    continue
                caught = True
                break
            assert caught, "the owner was never paused inside a write"
            stopping.set()
            paused_at = time.monotonic()
            # Its lease runs out: another node claims the space, the paused node's
            # transaction notwithstanding.
            claimed = until(
                lambda: (held := owner(database_url, space)) and held[0] != paused.name and held,
                LEASE + 2 * LEASE / 3 + 5,
                "another node claiming the space",
            )
            assert claimed[1] > epoch
            print(f"\nclaimed {time.monotonic() - paused_at:.2f} s after a pause inside a write")
            for node in nodes:
                if node is not paused:
                    assert node.proc.poll() is None
        finally:
            cluster.resume(paused)
        loader.join(timeout=40)
        jobs = histories(database_url)
        with connect(database_url) as conn:
            stored = {key for (key,) in conn.execute("SELECT idempotency_key FROM jobs")}
        refused = []
        for key, answer in zip(keys, made, strict=True):
            assert isinstance(answer, httpx.Response), answer
            if answer.status_code == 201:
                assert answer.json()["id"] in jobs
            else:  # the write caught by the pause among them: it committed nothing
                assert answer.status_code == 503, answer.text
                assert key not in stored, answer.text
                refused.append(answer.json()["error"]["message"])
        print("refused:", Counter(refused))
