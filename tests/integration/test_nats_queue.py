"""The job queue on a real 3-member nats-server cluster run from the generated configuration.

The cluster runs `nats_conf` with loopback routes; the streams, bucket and consumer are created by
running the provisioning script and definitions exactly as the ConfigMap carries them. Jobs are
processed by `worker_main` below, run as a separate process so that it can be killed: it is the
reference the sample service's worker role follows (see the module docstring of components/queue.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError, NoStreamResponseError, ServiceUnavailableError

# what a member's loss looks like to a client until a new leader is elected: retry, never crash
TRANSIENT = (NatsTimeout, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)
SPEC_OVERRIDES = {"consumer": {"ack_wait_seconds": 2, "max_deliver": 3}}


# ---------------------------------------------------------------- the worker (a separate process)


def worker_main(name: str) -> None:
    """Pull jobs, commit each job's effect once (compare-and-set on its status), ack only after it."""
    asyncio.run(work(name, os.environ))


async def work(name: str, env: Any) -> None:
    nc = await nats.connect(servers=env["NATS_URL"].split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    js = nc.jetstream()
    kv = await js.key_value(env["JOBS_RESULTS_BUCKET"])
    jobs = await js.pull_subscribe_bind(durable=env["JOBS_CONSUMER"], stream=env["JOBS_STREAM"])
    log(name, "ready")
    while True:
        try:
            for msg in await jobs.fetch(1, timeout=1):
                await handle(name, env, js, kv, msg)
        except NatsTimeout:
            continue  # no job within a second: ask again
        except TRANSIENT as error:
            # not acknowledged: the job comes back after ack_wait
            log(name, "transient", detail=type(error).__name__)
            await asyncio.sleep(0.2)


def log(name: str, event: str, job_id: str = "", detail: str = "") -> None:
    print(f"{name} {event} {job_id} {detail}".rstrip(), flush=True)


async def handle(name: str, env: Any, js: Any, kv: Any, msg: Any) -> None:
    job_id = msg.headers["Nats-Msg-Id"]
    deliveries = msg.metadata.num_delivered
    entry = await kv.get(job_id)
    if json.loads(entry.value)["status"] != "queued":
        log(name, "duplicate", job_id)  # the effect is committed: only the ack was lost
        await msg.ack_sync()
        return
    job = json.loads(msg.data)
    log(name, "start", job_id, f"delivery={deliveries}")
    try:
        result = await run_job(job, deliveries)
    except ValueError as error:
        if deliveries < int(env["JOBS_MAX_DELIVER"]):
            await msg.nak(delay=0.2)
            return
        kind = msg.subject.rsplit(".", 1)[-1]
        headers = {"Nats-Msg-Id": job_id, "Job-Error": str(error), "Job-Deliveries": str(deliveries)}
        await js.publish(f"{env['JOBS_SUBJECT_PREFIX']}.dead.{kind}", msg.data, headers=headers)
        with contextlib.suppress(KeyWrongLastSequenceError):  # another delivery finished it meanwhile
            await kv.update(job_id, status("failed", error=str(error)), last=entry.revision)
        log(name, "dead-lettered", job_id)
        await msg.ack_sync()
        return
    try:
        await kv.update(job_id, status("done", result=result, worker=name, deliveries=deliveries), last=entry.revision)
        log(name, "effect", job_id)
    except KeyWrongLastSequenceError:
        log(name, "lost-race", job_id)  # another delivery committed first
    if job.get("crash_after_effect") and deliveries == 1:
        os._exit(3)  # dies between its effect and its ack
    await msg.ack_sync()
    log(name, "acked", job_id)


async def run_job(job: dict[str, Any], deliveries: int) -> int:
    """The job itself: sum some numbers, after a pause; or misbehave as the job asks."""
    await asyncio.sleep(job.get("seconds", 0))
    if job.get("poison"):
        raise ValueError(f"cannot process job: poison (delivery {deliveries})")
    if job.get("crash"):
        os._exit(4)
    return sum(job["values"])


def status(state: str, **fields: Any) -> bytes:
    return json.dumps({"status": state, **fields}).encode()


if __name__ == "__main__":
    worker_main(sys.argv[1])


# ---------------------------------------------------------------- the tests

import pytest  # noqa: E402 - the worker process above needs none of the test imports

from components.labels import Meta  # noqa: E402
from components.queue import RUN_AS, QueueSpec, job_env, queue_objects  # noqa: E402
from components.settings import load  # noqa: E402
from testsupport.nats import NatsCluster, nats_server  # noqa: E402
from testsupport.process import ServerProcess, real_uid  # noqa: E402

pytestmark = pytest.mark.integration
META = Meta(namespace="phase6", instance="phase6", version="0.1.0")


def queue_spec(**overrides: Any) -> QueueSpec:
    spec, problems = load(QueueSpec, {**SPEC_OVERRIDES, **overrides}, "queue")
    assert spec is not None, problems
    return spec


class Cluster(NatsCluster):
    """The kit's cluster harness, plus the reference worker run against it."""

    def worker(self, name: str) -> ServerProcess:
        env = {item["name"]: item["value"] for item in job_env(META, self.spec)}
        log = self.tmp / f"{name}.log"
        return ServerProcess(
            [sys.executable, __file__, name],
            ready=lambda: log.exists() and f"{name} ready" in log.read_text(),
            log=log,
            env={**env, "NATS_URL": self.url},
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("nats"), queue_spec())
    running.start()
    running.provision()
    yield running
    running.close()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, queue_spec())
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture
def workers(cluster: Cluster) -> Iterator[Callable[[str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        started.append(cluster.worker(name))
        return started[-1]

    yield start
    for process in started:
        process.stop()


class Client:
    """The service's side of the protocol: submit a job (status `queued` first), read its status."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.spec = cluster, cluster.spec

    async def __aenter__(self) -> Client:
        self.nc = await nats.connect(servers=self.cluster.url.split(","), reconnect_time_wait=0.2)
        self.js = self.nc.jetstream()
        self.kv = await self.js.key_value(self.spec.results.bucket)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def submit(self, job: dict[str, Any], kind: str = "sum", deadline_seconds: float = 30) -> str:
        """Safe to retry: the status key is created once, and the stream drops a repeated job id."""
        job_id = uuid.uuid4().hex
        subject = f"{self.spec.jobs.subject_prefix}.submit.{kind}"

        async def once() -> None:
            with contextlib.suppress(KeyWrongLastSequenceError):  # an earlier attempt created it
                await self.kv.create(job_id, status("queued"))
            await self.js.publish(subject, json.dumps(job).encode(), headers={"Nats-Msg-Id": job_id}, timeout=2)

        await retrying(once, deadline_seconds)
        return job_id

    async def status(self, job_id: str) -> dict[str, Any]:
        entry = await self.kv.get(job_id)
        value: dict[str, Any] = json.loads(entry.value)
        return value

    async def wait_finished(self, job_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        pending = set(job_ids)
        done: dict[str, dict[str, Any]] = {}
        while pending:
            for job_id in sorted(pending):
                state = await retrying(lambda job_id=job_id: self.status(job_id), deadline - time.monotonic())
                if state["status"] != "queued":
                    done[job_id] = state
                    pending.discard(job_id)
            assert time.monotonic() < deadline, f"{len(pending)} job(s) still queued"
            await asyncio.sleep(0.1)
        return done

    async def effects(self, job_id: str) -> list[dict[str, Any]]:
        """Every committed `done` revision of a job: exactly one means exactly one effect.

        The history is read through an ordered consumer, which right after a failover may find
        nothing for a key that certainly exists, or not be answered within the request timeout
        while the new leader settles: that read is retried.
        """
        deadline = time.monotonic() + 10
        while True:
            try:
                history = await self.kv.history(job_id)
                break
            except (NoKeysError, NatsTimeout):
                assert time.monotonic() < deadline, f"no history for {job_id}"
                await asyncio.sleep(0.2)
        return [json.loads(e.value) for e in history if json.loads(e.value)["status"] == "done"]

    async def messages(self, stream: str) -> list[Any]:
        state = (await self.js.stream_info(stream)).state
        if not state.messages:
            return []
        return [await self.js.get_msg(stream, seq) for seq in range(state.first_seq, state.last_seq + 1)]


async def retrying(call: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    """Retry through a leader election (timeouts, no responders) until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def all_replicas_current(client: Client, *streams: str) -> bool:
    for stream in streams:
        cluster = (await retrying(lambda stream=stream: client.js.stream_info(stream), 10)).cluster
        peers = cluster.replicas or []
        if len(peers) != 2 or not all(peer.current and not peer.offline for peer in peers):
            return False
    return True


def wait_for_line(log: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and text in log.read_text()):
        assert time.monotonic() < deadline, f"{text!r} not in {log}"
        time.sleep(0.05)


def test_nats_server_accepts_the_configmap_configuration(tmp_path: Path) -> None:
    binary = nats_server()
    (config,) = [
        o
        for o in queue_objects(META, queue_spec(), provision_image="x:1")
        if o["metadata"]["name"] == "nats" and o["kind"] == "ConfigMap"
    ]
    (tmp_path / "nats.conf").write_text(config["data"]["nats.conf"])
    result = subprocess.run(
        [binary, "--config", str(tmp_path / "nats.conf"), "-t"],
        env={**os.environ, "SERVER_NAME": "nats-0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout + result.stderr


def test_generated_config_forms_a_cluster_with_replicated_streams(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with Client(cluster) as client:
            for name in ("JOBS", "JOBS_DEAD", "KV_JOB_RESULTS"):
                info = await client.js.stream_info(name)
                assert info.config.num_replicas == 3
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            jobs = await client.js.stream_info("JOBS")
            assert jobs.config.retention == "workqueue"
            if os.geteuid() == 0:  # every member as the pods run it: their uid, with no user entry
                assert {real_uid(m.process.proc.pid) for m in cluster.members if m.process} == {RUN_AS}
            consumer = await client.js.consumer_info("JOBS", "workers")
            assert (consumer.config.max_deliver, consumer.config.ack_wait) == (3, 2.0)

    asyncio.run(scenario())


def test_provisioning_is_idempotent_and_applies_changes(cluster: Cluster) -> None:
    assert cluster.provision() == [
        "stream JOBS: unchanged",
        "stream JOBS_DEAD: unchanged",
        "stream KV_JOB_RESULTS: unchanged",
        "consumer JOBS/workers: unchanged",
    ]
    changed = queue_spec(consumer={"ack_wait_seconds": 2, "max_deliver": 4}, jobs={"duplicate_window_seconds": 60})
    assert cluster.provision(changed) == [
        "stream JOBS: updated (duplicate_window)",
        "stream JOBS_DEAD: unchanged",
        "stream KV_JOB_RESULTS: unchanged",
        "consumer JOBS/workers: updated (max_deliver)",
    ]
    assert cluster.provision() == [
        "stream JOBS: updated (duplicate_window)",
        "stream JOBS_DEAD: unchanged",
        "stream KV_JOB_RESULTS: unchanged",
        "consumer JOBS/workers: updated (max_deliver)",
    ]


def test_a_job_submitted_twice_is_enqueued_once(cluster: Cluster) -> None:
    async def scenario() -> None:
        async with Client(cluster) as client:
            subject = f"{cluster.spec.jobs.subject_prefix}.submit.sum"
            first = await client.js.publish(subject, b"{}", headers={"Nats-Msg-Id": "same-job"})
            again = await client.js.publish(subject, b"{}", headers={"Nats-Msg-Id": "same-job"})
            assert (first.duplicate, again.duplicate, again.seq) == (None, True, first.seq)
            await client.js.purge_stream("JOBS")

    asyncio.run(scenario())


def test_worker_killed_mid_job_leads_to_redelivery_and_one_effect(cluster: Cluster, workers: Any) -> None:
    first = workers("worker-a")

    async def scenario() -> None:
        async with Client(cluster) as client:
            slow = await client.submit({"values": [1, 2, 3], "seconds": 3})
            wait_for_line(first.log, f"start {slow}")
            first.kill()  # mid-job: no effect, no ack
            second = workers("worker-b")
            state = (await client.wait_finished([slow]))[slow]
            assert (state["worker"], state["deliveries"], state["result"]) == ("worker-b", 2, 6)
            assert len(await client.effects(slow)) == 1

            # killed between its effect and its ack: the redelivery must not repeat the effect
            acked_late = await client.submit({"values": [4, 5], "crash_after_effect": True})
            second.proc.wait(timeout=20)
            assert second.proc.returncode == 3
            third = workers("worker-c")
            wait_for_line(third.log, f"duplicate {acked_late}")
            effects = await client.effects(acked_late)
            assert [(e["worker"], e["result"]) for e in effects] == [("worker-b", 9)]
            deadline = time.monotonic() + 10
            while (await client.js.stream_info("JOBS")).state.messages:
                assert time.monotonic() < deadline, "acknowledged jobs must leave the work queue"
                await asyncio.sleep(0.1)

    asyncio.run(scenario())


def test_poison_job_lands_in_the_dead_letter_stream(cluster: Cluster, workers: Any) -> None:
    worker = workers("worker-d")

    async def scenario() -> None:
        async with Client(cluster) as client:
            before = len(await client.messages("JOBS_DEAD"))
            poison = await client.submit({"values": [1], "poison": True}, kind="resize")
            state = (await client.wait_finished([poison]))[poison]
            assert state == {"status": "failed", "error": "cannot process job: poison (delivery 3)"}
            dead = (await client.messages("JOBS_DEAD"))[before:]
            assert [m.subject for m in dead] == ["jobs.dead.resize"]
            assert dead[0].headers["Nats-Msg-Id"] == poison
            assert json.loads(dead[0].data) == {"values": [1], "poison": True}
            assert worker.log.read_text().count(f"start {poison}") == 3

    asyncio.run(scenario())


def test_job_whose_worker_dies_every_time_leaves_a_max_deliveries_advisory(cluster: Cluster, workers: Any) -> None:
    async def scenario() -> None:
        async with Client(cluster) as client:
            before = len(await client.messages("JOBS_DEAD"))
            for attempt in range(cluster.spec.consumer.max_deliver):
                worker = workers(f"worker-crash-{attempt}")
                if attempt == 0:  # submitted once the worker is up, so it cannot die before it is ready
                    crashing = await client.submit({"values": [1], "crash": True})
                worker.proc.wait(timeout=20)
                assert worker.proc.returncode == 4
            # JetStream notices the exhausted job when it next looks for one to deliver: a worker is polling
            workers("worker-after-crashes")
            deadline = time.monotonic() + 20
            while len(dead := (await client.messages("JOBS_DEAD"))[before:]) < 1:
                assert time.monotonic() < deadline, "no max-deliveries advisory"
                await asyncio.sleep(0.2)
            advisory = json.loads(dead[0].data)
            assert dead[0].subject == "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JOBS.workers"
            assert (advisory["stream"], advisory["consumer"], advisory["deliveries"]) == ("JOBS", "workers", 3)
            original = await client.js.get_msg("JOBS", advisory["stream_seq"])
            assert original.headers["Nats-Msg-Id"] == crashing
            await client.js.delete_msg("JOBS", advisory["stream_seq"])

    asyncio.run(scenario())


def test_jobs_keep_flowing_with_the_stream_leader_killed(fresh_cluster: Cluster) -> None:
    fresh_cluster.provision()
    worker = fresh_cluster.worker("worker-e")

    async def scenario() -> None:
        async with Client(fresh_cluster) as client:
            before = [await client.submit({"values": [i, i]}) for i in range(20)]
            assert len(await client.wait_finished(before)) == 20
            leader = (await client.js.stream_info("JOBS")).cluster.leader
            fresh_cluster.kill(leader)
            killed = time.monotonic()
            after = [await client.submit({"values": [i, 1]}) for i in range(20)]
            results = await client.wait_finished(after)
            print(f"\nkilled {leader}; 20 jobs submitted and done {time.monotonic() - killed:.2f}s later")
            assert sorted(r["result"] for r in results.values()) == sorted(i + 1 for i in range(20))
            assert [len(await client.effects(job_id)) for job_id in before + after] == [1] * 40
            new_leader = (await client.js.stream_info("JOBS")).cluster.leader
            assert new_leader not in (None, leader)

            # the member comes back under its name with its files, and catches up with the jobs it missed
            fresh_cluster.run(fresh_cluster.member(leader))
            restarted = time.monotonic()
            while not await all_replicas_current(client, "JOBS", "KV_JOB_RESULTS"):
                assert time.monotonic() - restarted < 30, f"{leader} did not rejoin"
                await asyncio.sleep(0.2)
            print(f"{leader} restarted and current again {time.monotonic() - restarted:.2f}s later")

    try:
        asyncio.run(scenario())
    finally:
        worker.stop()
