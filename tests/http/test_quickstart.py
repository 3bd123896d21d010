"""The README's flow, as a user would run it: a producer creates jobs with plain HTTP, and
the plain polling worker — poll count 5, ack, complete or fail — written with a sync HTTP
client, runs them to completion."""

import httpx
import trio

from .conftest import Server


def polling_worker(base_url: str, space_id: str, key: str, stop_after: int) -> list[str]:
    """The seed worker: exactly what a user writes, with a blocking client."""
    done: list[str] = []
    with httpx.Client(base_url=base_url, headers={"x-api-key": key}, timeout=30) as http:
        while len(done) < stop_after:
            polled = http.post(f"/api/v1/spaces/{space_id}/jobs/poll", json={"count": 5})
            polled.raise_for_status()
            for job in polled.json()["jobs"]:
                http.post(f"/api/v1/jobs/{job['id']}/ack").raise_for_status()
                if job["payload"].get("fail"):
                    response = http.post(
                        f"/api/v1/jobs/{job['id']}/fail", json={"error": "asked to fail"}
                    )
                else:
                    http.post(
                        f"/api/v1/jobs/{job['id']}/progress",
                        json={"percent": 50, "message": "half way"},
                    ).raise_for_status()
                    response = http.post(
                        f"/api/v1/jobs/{job['id']}/complete",
                        json={"result": {"echo": job["payload"]["n"]}},
                    )
                response.raise_for_status()
                done.append(job["id"])
    return done


async def test_the_seed_worker_runs_jobs_to_completion(server: Server) -> None:
    created = []
    for n in range(12):
        response = await server.client.post(
            f"/api/v1/spaces/{server.space}/jobs",
            json={"name": "send-email", "payload": {"n": n, "fail": n == 3}, "maxRetries": 0},
            headers=server.headers("producer"),
        )
        assert response.status_code == 201
        created.append(response.json()["id"])
    done = await trio.to_thread.run_sync(
        polling_worker, server.url, server.space, server.keys["worker"], 12
    )
    assert sorted(done) == sorted(created)
    statuses = {}
    for job_id in created:
        response = await server.client.get(
            f"/api/v1/jobs/{job_id}", headers=server.headers("producer")
        )
        body = response.json()
        statuses[body["payload"]["n"]] = (body["status"], body["result"])
    assert statuses[3] == ("dead", {"error": "asked to fail"})
    assert all(statuses[n] == ("completed", {"echo": n}) for n in statuses if n != 3)
    stats = await server.client.get(
        f"/api/v1/spaces/{server.space}/stats", headers=server.headers("producer")
    )
    assert stats.json()["counts"]["completed"] == 11
