"""Async jobs end to end: POST /jobs on the API, the real `sample worker` process consuming them from a
3-member NATS JetStream cluster run from the kit's configuration and provisioned by the kit's script."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sample_helpers import Client, Postgres, conforms, seed_products
from sample_jobs_helpers import TableLock, dead_letters, history, jobs_env, start, wait_finished, wait_for_log

from testsupport.nats import NatsCluster, nats_server
from testsupport.process import LOOPBACK, ServerProcess, free_port, port_open
from testsupport.redis import RedisServer

pytestmark = pytest.mark.integration
StartWorker = Callable[[], tuple[ServerProcess, Client]]


@pytest.fixture(scope="module")
def api(postgres: Postgres, nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """`sample serve` in role `all` with the job queue configured (as phase 6's single-role fallback)."""
    process, client = start(
        "serve", {"DATABASE_URL": postgres.dsn, **jobs_env(nats_cluster)}, tmp_path_factory.mktemp("api") / "api.log"
    )
    yield client
    process.stop()


@pytest.fixture
def workers(postgres: Postgres, nats_cluster: NatsCluster, tmp_path: Path) -> Iterator[StartWorker]:
    started: list[ServerProcess] = []

    def start_worker() -> tuple[ServerProcess, Client]:
        env = {"DATABASE_URL": postgres.dsn, **jobs_env(nats_cluster)}
        process, client = start("worker", env, tmp_path / f"worker-{len(started)}.log")
        started.append(process)
        wait_for_log(process, "worker ready")
        return process, client

    yield start_worker
    for process in started:
        process.stop()


@pytest.fixture
def order_id(clean: None, postgres: Postgres, api: Client) -> int:
    """An order of 2 x product 1 (1.00) and 1 x product 2 (2.00) placed through the API."""
    seed_products(postgres, 2)
    user = api.post("/users", {"email": "buyer@example.com", "name": "Buyer", "password": "correct horse"})
    assert user.status == 201, user.body
    items = [{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}]
    order = api.post("/orders", {"user_id": user.json()["id"], "items": items})
    assert order.status == 201, order.body
    return int(order.json()["id"])


def submit(api: Client, order_id: int) -> str:
    reply = api.post("/jobs", {"kind": "order-receipt", "payload": {"order_id": order_id}})
    assert reply.status == 202, reply.body
    job: dict[str, Any] = reply.json()
    assert reply.header("location") == f"/jobs/{job['id']}"
    assert (job["kind"], job["status"]) == ("order-receipt", "queued")
    return str(job["id"])


def done_revisions(cluster: NatsCluster, job_id: str) -> list[dict[str, Any]]:
    return [state for state in history(cluster, job_id) if state["status"] == "done"]


def test_job_is_accepted_then_completed_by_the_worker(api: Client, order_id: int, workers: StartWorker) -> None:
    job_id = submit(api, order_id)
    assert api.get(f"/jobs/{job_id}").json() == {"id": job_id, "status": "queued", "kind": "order-receipt"}
    workers()
    state = wait_finished(api, job_id)
    assert state["status"] == "done", state
    assert state["deliveries"] == 1
    receipt = state["result"]["receipt"].splitlines()
    assert receipt[1:] == ["2 x Product 1 @ 1.00 = 2.00", "1 x Product 2 @ 2.00 = 2.00", "Total: 4.00"]
    assert state["result"]["total_cents"] == 400


def test_bad_jobs_are_refused_with_the_field_named(api: Client) -> None:
    cases = [
        ({"kind": "resize", "payload": {}}, "kind: got 'resize', allowed: order-receipt"),
        ({"kind": "order-receipt", "payload": {"order_id": 0}}, "payload.order_id: expected `int` >= 1, got 0"),
        ({"kind": "order-receipt", "payload": {}}, "payload: object missing required field `order_id`, got an object"),
        ({"kind": "order-receipt"}, "request body: object missing required field `payload`, got an object"),
    ]
    for body, message in cases:
        reply = api.post("/jobs", body)
        assert (reply.status, reply.error) == (422, message), body
    assert api.get("/jobs/not-a-job").error == "id: got 'not-a-job', allowed: a job id (32 hex digits)"
    missing = api.get(f"/jobs/{'0' * 32}")
    assert (missing.status, missing.error) == (404, f"id: job {'0' * 32} does not exist (or has expired)")


def test_the_document_describes_the_job_body_the_server_takes(api: Client) -> None:
    spec = api.get("/openapi.json").json()
    body = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobCreate"}
    assert conforms(spec, "JobCreate", {"kind": "order-receipt", "payload": {"order_id": 1}})  # accepted: see above
    refused = [
        {"kind": "resize", "payload": {}},
        {"kind": "order-receipt", "payload": {"order_id": 0}},
        {"kind": "order-receipt", "payload": {"order_id": 1, "copies": 2}},
        {"kind": "order-receipt", "payload": {}},
        {"kind": "order-receipt"},
        {"kind": "order-receipt", "payload": {"order_id": 1}, "priority": 1},
    ]
    for job in refused:
        assert api.post("/jobs", job).status == 422, job
        assert not conforms(spec, "JobCreate", job), job


def test_worker_killed_mid_job_means_redelivery_and_one_effect(
    api: Client, order_id: int, postgres: Postgres, nats_cluster: NatsCluster, workers: StartWorker
) -> None:
    first, _ = workers()
    lock = TableLock(postgres.dsn, "orders")  # the job blocks on its first read of the order
    try:
        job_id = submit(api, order_id)
        wait_for_log(first, job_id)
        first.kill()
    finally:
        lock.release()
    assert api.get(f"/jobs/{job_id}").json()["status"] == "queued"
    workers()
    state = wait_finished(api, job_id)
    assert (state["status"], state["deliveries"]) == ("done", 2)
    assert len(done_revisions(nats_cluster, job_id)) == 1


def test_poison_job_is_dead_lettered_and_marked_failed(
    api: Client, clean: None, nats_cluster: NatsCluster, workers: StartWorker
) -> None:
    before = len(dead_letters(nats_cluster))
    worker, _ = workers()
    job_id = submit(api, 424242)  # no such order: every delivery fails
    state = wait_finished(api, job_id)
    assert state == {
        "id": job_id,
        "status": "failed",
        "kind": "order-receipt",
        "error": "order_id: order 424242 does not exist",
        "deliveries": 3,
    }
    [dead] = dead_letters(nats_cluster)[before:]
    assert dead.subject == "jobs.dead.order-receipt"
    assert (dead.headers["Nats-Msg-Id"], dead.headers["Job-Deliveries"]) == (job_id, "3")
    assert dead.data == b'{"order_id":424242}'
    assert worker.log.read_text().count("job failed, retrying") == 2


def test_job_whose_worker_dies_on_every_delivery_is_marked_failed_from_the_advisory(
    api: Client, order_id: int, postgres: Postgres, nats_cluster: NatsCluster, workers: StartWorker
) -> None:
    before = len(dead_letters(nats_cluster))
    job_id = ""
    for delivery in range(1, nats_cluster.spec.consumer.max_deliver + 1):
        # locked before the worker starts: a redelivery can reach it the moment it is ready
        lock = TableLock(postgres.dsn, "orders")
        try:
            worker, _ = workers()
            if delivery == 1:
                job_id = submit(api, order_id)
            wait_for_log(worker, f'"delivery":{delivery}')
            worker.kill()
        finally:
            lock.release()
    workers()  # its next fetch makes JetStream give up on the job and publish the advisory
    state = wait_finished(api, job_id)
    assert state["status"] == "failed"
    assert state["error"] == "no worker finished the job in 3 deliveries (each one stopped mid-job)"
    [advisory] = dead_letters(nats_cluster)[before:]
    assert advisory.subject == "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JOBS.workers"
    assert done_revisions(nats_cluster, job_id) == []


def test_sigterm_lets_the_job_in_flight_finish(
    api: Client, order_id: int, postgres: Postgres, workers: StartWorker
) -> None:
    worker, _ = workers()
    lock = TableLock(postgres.dsn, "orders")
    try:
        job_id = submit(api, order_id)
        wait_for_log(worker, job_id)
        worker.proc.send_signal(signal.SIGTERM)
        wait_for_log(worker, "Waiting for application shutdown")  # the worker is stopping, its job still blocked
    finally:
        lock.release()
    # uvicorn re-raises the SIGTERM it handled once the shutdown is complete
    assert worker.proc.wait(timeout=20) == -signal.SIGTERM
    log = worker.log.read_text()
    assert log.index('"job done"') < log.index("worker stopped fetching") < log.index("Application shutdown complete")
    state = api.get(f"/jobs/{job_id}").json()
    assert (state["status"], state["deliveries"]) == ("done", 1)


def test_sigterm_naks_a_job_that_outlasts_the_shutdown_timeout(
    api: Client, order_id: int, postgres: Postgres, nats_cluster: NatsCluster, workers: StartWorker, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": postgres.dsn, **jobs_env(nats_cluster), "SHUTDOWN_TIMEOUT_SECONDS": "1"}
    impatient, _ = start("worker", env, tmp_path / "impatient.log")
    lock = TableLock(postgres.dsn, "orders")
    try:
        wait_for_log(impatient, "worker ready")
        job_id = submit(api, order_id)
        wait_for_log(impatient, job_id)
        impatient.proc.send_signal(signal.SIGTERM)
        impatient.proc.wait(timeout=20)
    finally:
        lock.release()
        impatient.stop()
    assert "job interrupted by shutdown, nak'ed" in impatient.log.read_text()
    assert api.get(f"/jobs/{job_id}").json()["status"] == "queued"
    workers()  # nak'ed, so delivered again at once rather than after the ack wait
    state = wait_finished(api, job_id)
    assert (state["status"], state["deliveries"]) == ("done", 2)


def test_worker_role_serves_probes_only_and_is_ready_when_connected(workers: StartWorker) -> None:
    _, client = workers()
    ready = client.get("/readyz")
    assert ready.status == 200, ready.body
    assert ready.json()["checks"]["nats"] == "ok"
    for path in ("/products", f"/jobs/{'0' * 32}", "/users/1", "/static/img/product-0.svg"):
        assert client.get(path).status == 404, path
    assert set(client.get("/openapi.json").json()["paths"]) == {"/healthz", "/readyz", "/metrics"}


def test_with_sessions_a_user_may_only_ask_about_their_own_orders(
    clean: None, postgres: Postgres, redis_server: RedisServer, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": postgres.dsn, "REDIS_URL": redis_server.url, "SESSIONS_ENABLED": "true"}
    process, anonymous = start("serve", {**env, **jobs_env(nats_cluster)}, tmp_path / "api.log")
    try:
        seed_products(postgres, 1)
        buyers = []
        for email in ("one@example.com", "two@example.com"):
            buyer = Client(anonymous.port)
            assert buyer.post("/users", {"email": email, "name": "B", "password": "correct horse"}).status == 201
            assert buyer.post("/sessions", {"email": email, "password": "correct horse"}).status == 201
            assert buyer.post("/orders", {"items": [{"product_id": 1, "quantity": 1}]}).status == 201
            buyers.append(buyer)
        body = {"kind": "order-receipt", "payload": {"order_id": 1}}
        assert anonymous.post("/jobs", body).status == 401
        refused = buyers[1].post("/jobs", body)
        assert (refused.status, refused.error) == (404, "payload.order_id: order 1 does not exist")
        assert buyers[0].post("/jobs", body).status == 202
    finally:
        process.stop()


def test_worker_is_unready_while_nats_is_unreachable(postgres: Postgres, tmp_path: Path) -> None:
    """A lone nats-server (no JetStream needed to connect): /readyz follows the connection."""
    port = free_port()
    server = ServerProcess(
        [nats_server(), "-a", LOOPBACK, "-p", str(port)], ready=lambda: port_open(port), log=tmp_path / "nats.log"
    )
    env = {"DATABASE_URL": postgres.dsn, "NATS_URL": f"nats://{LOOPBACK}:{port}", "READY_TIMEOUT_MS": "200"}
    worker, client = start("worker", env, tmp_path / "worker.log")
    try:
        assert client.get("/readyz").status == 200
        server.stop()
        reply = client.get("/readyz")
        assert reply.status == 503
        assert reply.json()["checks"]["nats"].startswith("down: ")
        server = ServerProcess(
            [nats_server(), "-a", LOOPBACK, "-p", str(port)], ready=lambda: port_open(port), log=tmp_path / "nats.log"
        )
        deadline = time.monotonic() + 10
        while client.get("/readyz").status != 200:
            assert time.monotonic() < deadline, "not ready again after NATS came back"
            time.sleep(0.1)
    finally:
        worker.stop()
        server.stop()
