"""Three real nodes on one PostgreSQL database, on loopback ports: any node accepts any
request. The seed's quick start through every node, a long poll on one node given a job
created through another, the space stream through a node that does not own the space,
and a graceful stop that hands its spaces over at once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.cluster.nodes import Cluster, Node


def quick_start(
    producer_node: Node, worker_node: Node, space: str, producer: str, worker: str
) -> None:
    with (
        httpx.Client(base_url=producer_node.url, timeout=30) as p,
        httpx.Client(base_url=worker_node.url, timeout=30) as w,
    ):
        made = p.post(f"/api/v1/spaces/{space}/jobs", json={"name": "hello", "payload": {"n": 1}},
                      headers={"x-api-key": producer})  # fmt: skip
        assert made.status_code == 201, made.text
        job = made.json()["id"]
        polled = w.post(f"/api/v1/spaces/{space}/jobs/poll", json={"wait": 10, "names": ["hello"]},
                        headers={"x-api-key": worker})  # fmt: skip
        assert [d["id"] for d in polled.json()["jobs"]] == [job], polled.text
        lease = polled.json()["jobs"][0]["leaseId"]
        for step, body in (
            ("ack", {}),
            ("progress", {"percent": 50, "message": "half"}),
            ("complete", {"result": 7}),
        ):
            done = w.post(f"/api/v1/jobs/{job}/{step}", json={**body, "leaseId": lease},
                          headers={"x-api-key": worker})  # fmt: skip
            assert done.status_code == 200, (step, done.text)
        got = p.get(f"/api/v1/jobs/{job}", headers={"x-api-key": producer})
        assert got.json()["status"] == "completed" and got.json()["result"] == 7


def make_space(node: Node) -> tuple[str, str, str]:
    """A new space, made through ``node``, with a producer and a worker key."""
    with node.admin() as http:
        space = http.post("/api/v1/spaces", json={"name": "s"}).json()["id"]
        keys = []
        for name, body in (
            ("producer", {"scopes": ["jobs:create", "jobs:read"]}),
            ("worker", {"preset": "worker"}),
        ):
            made = http.post(f"/api/v1/spaces/{space}/tokens", json={"name": name, **body})
            assert made.status_code == 201, made.text
            keys.append(made.json()["key"])
    return space, keys[0], keys[1]


@pytest.fixture
def cluster(database_url: str, tmp_path: Path) -> Cluster:
    return Cluster(database_url, tmp_path)


def test_the_quick_start_runs_through_any_node(cluster: Cluster) -> None:
    with cluster:
        nodes = cluster.start(3)
        spaces = [make_space(node) for node in nodes]
        for space, producer, worker in spaces:
            for a in nodes:
                for b in nodes:
                    quick_start(a, b, space, producer, worker)
