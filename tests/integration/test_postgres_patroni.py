"""A Postgres group run by Patroni: real Patroni 4.1.5, Postgres 15 and the simulated cluster's API server.

The kit's objects for the group are applied to the real kube-apiserver and its three members run
here on loopback (testsupport/patroni.py): the leader lock, the pods' role labels and the Services'
endpoints are the API server's, checked against the kit's Role. Failover, rejoin, fencing and
switchover run under a steady writer; the figures are printed (run with -s to see them).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from components import patroni, postgres
from components.local import plan
from components.patroni import PatroniSpec
from components.postgres import PostgresSpec
from testsupport.control_plane import ControlPlane
from testsupport.patroni import PASSWORDS, UID, VENV, Group, Member
from testsupport.process import LOOPBACK, ServerProcess, as_uid, free_port, wait_for, write_secret
from testsupport.service_proxy import ServiceProxy
from testsupport.writer import Writer

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

KILLS = 5


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[patroni] {line}")


def start_group(plane: ControlPlane, namespace: str, ha: PatroniSpec) -> Iterator[Group]:
    group = Group(plane, namespace, PostgresSpec(replicas=2, ha=ha))
    try:
        group.start()
        yield group
    finally:
        group.close()


@pytest.fixture(scope="module")
def group(control_plane: ControlPlane) -> Iterator[Group]:
    """Phase 3's group: three members, asynchronous replication, the kit's default timings."""
    yield from start_group(control_plane, "patroni-async", PatroniSpec())


@pytest.fixture
def leader(group: Group) -> Member:
    """The group healthy again (every member running, one leader, the others streaming)."""
    for member in group.members:
        if not member.running:
            member.start()
    return group.wait_healthy()


def endpoint_ips(group: Group, service: str) -> set[str]:
    slices = group.plane.get("endpointslices", "-n", group.namespace, "-l", f"kubernetes.io/service-name={service}")
    return {
        address
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint["addresses"]
    }


def pod_ips(group: Group, names: list[str]) -> set[str]:
    pods = group.pods()
    return {pods[name]["status"]["podIP"] for name in names}


def roles(group: Group) -> dict[str, str | None]:
    return {name: pod["metadata"]["labels"].get("role") for name, pod in group.pods().items()}


def test_members_elect_a_leader_in_the_api_server_and_label_their_pods(group: Group, leader: Member) -> None:
    replicas = [m.name for m in group.members if m is not leader]
    assert group.leader_annotation() == leader.name
    assert wait_for(lambda: roles(group) == {leader.name: "primary", **dict.fromkeys(replicas, "replica")}, 30, "roles")
    # the Services select by those labels: the endpoints controller sends postgres-rw to the leader only
    assert wait_for(lambda: endpoint_ips(group, "postgres-rw") == pod_ips(group, [leader.name]), 30, "rw endpoints")
    assert wait_for(lambda: endpoint_ips(group, "postgres-ro") == pod_ips(group, replicas), 30, "ro endpoints")
    slots = leader.value("SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE active")
    assert slots == ",".join(name.replace("-", "_") for name in sorted(replicas))
    # patroni-post-bootstrap.sh created the service's database; Patroni the replication role
    assert leader.value("SELECT current_database()") == "app"
    assert leader.value("SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'") is True


def test_the_versions_tested_are_the_versions_the_image_ships(leader: Member) -> None:
    """Patroni from the image's requirements file, Postgres of the image's major."""
    version = subprocess.run([str(VENV / "bin" / "patroni"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split() == ["patroni", patroni.VERSION]
    assert leader.value("SHOW server_version_num")[:2] == str(postgres.MAJOR)


def test_the_passwords_are_in_a_private_file_not_in_any_environment(group: Group, leader: Member) -> None:
    passwords = leader.run_dir / "90-passwords.yml"
    assert passwords.stat().st_mode & 0o777 == 0o600
    assert passwords.stat().st_uid == UID
    assert "AppPassw0rd" in passwords.read_text()
    environments = []
    for pid in subprocess.run(["pgrep", "-u", str(UID)], capture_output=True, text=True).stdout.split():
        try:
            environments.append(open(f"/proc/{pid}/environ", "rb").read())  # noqa: SIM115
        except OSError:
            continue
    assert environments, "no process of the Postgres uid found"
    assert not [env for env in environments if b"AppPassw0rd" in env or b"ReplPassw0rd" in env]


def test_the_role_grants_what_patroni_uses_and_nothing_more(group: Group) -> None:
    account = f"system:serviceaccount:{group.namespace}:{group.names.patroni}"

    def can(verb: str, resource: str) -> bool:
        done = subprocess.run(
            plan.kubectl(group.plane.ctx, "auth", "can-i", verb, resource, "-n", group.namespace, "--as", account),
            env=group.plane.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        return done.stdout.strip() == "yes"

    allowed = [("create", "configmaps"), ("patch", "configmaps"), ("watch", "configmaps"), ("patch", "pods")]
    denied = [("delete", "configmaps"), ("delete", "pods"), ("get", "secrets"), ("create", "endpoints")]
    assert {check: can(*check) for check in allowed + denied} == {
        **dict.fromkeys(allowed, True),
        **dict.fromkeys(denied, False),
    }


def failover(group: Group, leader: Member, writer: Writer) -> tuple[Member, float]:
    """Kill -9 the leader's container under `writer`; the new leader and the seconds until it took writes."""
    writer.wait_for_more()
    killed = time.monotonic()
    leader.kill()
    try:
        new = wait_for(group.leader, group.spec.ha.ttl + group.spec.ha.loop_wait + 30, "a new leader", interval=0.2)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{group.logs()}") from error
    writer.wait_for_more()
    return new, writer.first_after(killed, new.port)


def lost(leader: Member, writer: Writer) -> list[int]:
    """Acknowledged ids that the (new) leader does not have."""
    with leader.connect(autocommit=True) as conn:
        present = {row[0] for row in conn.execute(f"SELECT id FROM {writer.table}")}
    return [i for i in writer.acknowledged if i not in present]


def kill_runs(group: Group, capsys: pytest.CaptureFixture[str], table: str) -> list[int]:
    """KILLS failovers in a row, each killed leader restarted and caught up before the next; the
    number of acknowledged commits lost in each."""
    ha = group.spec.ha
    bound = ha.ttl + ha.loop_wait + 5
    seconds, losses = [], []
    for run in range(KILLS):
        leader = group.wait_healthy()
        writer = Writer(group.dsn(), table=f"{table}_{run}")
        try:
            new, took = failover(group, leader, writer)
        finally:
            writer.stop()
        seconds.append(took)
        losses.append(len(lost(new, writer)))
        assert new is not leader
        assert took <= bound, f"run {run}: writes accepted again after {took:.1f}s, more than {bound}s"
        # the killed member comes back as a replica of the new leader, rewound if it had diverged
        timeline = new.value("SELECT timeline_id FROM pg_control_checkpoint()")
        leader.start()
        assert group.wait_healthy() is new
        assert wait_for(lambda: leader.role() == "replica", 60, f"{leader.name} a replica")  # noqa: B023
        assert wait_for(lambda: leader.value("SELECT received_tli FROM pg_stat_wal_receiver") >= timeline, 60, "tli")  # noqa: B023
        # the replication slots followed the leader: one per other member, each in use
        slots = new.value("SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE active")
        assert slots == ",".join(sorted(m.name.replace("-", "_") for m in group.members if m is not new))
        ids = new.value(f"SELECT count(*) FROM {writer.table}")
        assert wait_for(lambda: leader.value(f"SELECT count(*) FROM {writer.table}") == ids, 60, "old leader caught up")  # noqa: B023
    median = statistics.median(seconds)
    report(
        capsys,
        f"{group.namespace}: kill -9 of the leader -> writes accepted by a new leader after "
        f"median {median:.1f}s ({', '.join(f'{s:.1f}' for s in seconds)}; bound ttl + loop_wait + 5 = {bound}s); "
        f"acknowledged commits lost per run: {losses}",
    )
    return losses


def test_killing_the_leader_fails_over_within_ttl_and_the_old_leader_rejoins(
    group: Group, leader: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    kill_runs(group, capsys, "async_kills")


def test_a_leader_cut_off_from_the_api_server_demotes_itself_before_another_takes_writes(
    group: Group, leader: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    writes: dict[str, list[float]] = {m.name: [] for m in group.members}
    stop = threading.Event()

    def probe(member: Member) -> None:
        """Write to this member directly, never through a Service: any server that takes writes counts."""
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        while not stop.is_set():
            try:
                conn = conn or member.connect(autocommit=True)
                conn.execute("CREATE TABLE IF NOT EXISTS fencing (at timestamptz DEFAULT now())")
                conn.execute("INSERT INTO fencing DEFAULT VALUES")
                writes[member.name].append(time.monotonic())
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            stop.wait(0.05)

    threads = [threading.Thread(target=probe, args=(m,), daemon=True) for m in group.members]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: writes[leader.name], 10, "writes on the leader")
        cut = time.monotonic()
        leader.proxy.cut()
        new = wait_for(
            lambda: next((m for m in group.members if m is not leader and m.writable()), None),
            group.spec.ha.ttl * 3,
            "another member writable",
        )
        wait_for(lambda: [t for t in writes[new.name] if t > cut], 30, "writes on the new leader")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        leader.proxy.restore()
    last_old = max(t for t in writes[leader.name])
    first_new = min(t for t in writes[new.name] if t > cut)
    report(
        capsys,
        f"API server cut off from the leader: its last write {last_old - cut:.1f}s after the cut, the new leader's "
        f"first {first_new - cut:.1f}s after (ttl {group.spec.ha.ttl}s); overlap: none"
        if last_old < first_new
        else "overlap!",
    )
    assert last_old - cut <= group.spec.ha.ttl, "the old leader kept taking writes for longer than the ttl"
    assert last_old < first_new, "two members took writes at the same time"
    # back on the network, the old leader follows the new one
    assert wait_for(lambda: leader.role() == "replica", 120, f"{leader.name} back as a replica")
    assert group.wait_healthy() is new


def test_a_leader_that_wrote_what_no_replica_received_is_rewound_when_it_rejoins(
    group: Group, leader: Member, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without synchronous_mode, commits the replicas never received are lost at a failover; the old
    leader must not keep them: Patroni rewinds it (pg_rewind) onto the new leader's timeline."""
    leader.network.cut()  # its replicas receive nothing more; clients still reach it
    try:
        with leader.connect(autocommit=True) as conn:
            conn.execute("CREATE TABLE diverged (id int)")
            conn.execute("INSERT INTO diverged SELECT generate_series(1, 1000)")
        time.sleep(group.spec.ha.loop_wait + 2)  # the leader records its position in the API server
        leader.kill()
    finally:
        leader.network.restore()
    new = wait_for(group.leader, group.spec.ha.ttl + group.spec.ha.loop_wait + 30, "a new leader")
    assert new.value("SELECT to_regclass('public.diverged')") is None  # those 1000 commits are lost
    leader.start()
    assert wait_for(lambda: leader.role() == "replica", 120, f"{leader.name} back as a replica")
    assert group.wait_healthy() is new
    assert "pg_rewind" in leader.log(), "the old leader rejoined without a rewind"
    assert leader.value("SELECT to_regclass('public.diverged')") is None  # its diverged WAL is gone
    report(capsys, "old leader with 1000 unreplicated commits: rewound with pg_rewind, following the new leader")


def test_a_replica_too_far_behind_is_never_promoted(group: Group, leader: Member) -> None:
    ha = group.spec.ha
    current, behind = [m for m in group.members if m is not leader]
    behind.stop()
    with leader.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bulk (id serial, pad text)")
        conn.execute("INSERT INTO bulk (pad) SELECT repeat('x', 1000) FROM generate_series(1, 5000)")  # ~6 MB of WAL
    lsn = leader.value("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
    wait_for(
        lambda: current.value("SELECT pg_last_wal_receive_lsn() - '0/0'::pg_lsn") >= lsn,
        30,
        "the other replica has the writes",
    )
    time.sleep(ha.loop_wait + 2)  # the leader records its position in the API server every loop
    leader.kill()
    current.kill()
    behind.start()
    deadline = time.monotonic() + ha.ttl + 2 * ha.loop_wait + 5
    while time.monotonic() < deadline:
        assert not behind.writable(), f"{behind.name} was promoted although it lacks ~6 MB of WAL"
        time.sleep(1)
    assert group.leader_annotation() in (None, "", leader.name), "the lagging replica took the leader lock"
    current.start()
    assert wait_for(group.leader, 120, "a leader") is current
    assert current.value("SELECT count(*) FROM bulk") >= 5000


def sample(command: str, env: dict[str, str], log: Path, port: int | None = None) -> ServerProcess | None:
    """`sample migrate` (run to completion) or `sample serve` on `port` (returned running)."""
    argv = [sys.executable, "-m", "sample", command]
    if port is None:
        done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return None
    return ServerProcess(argv, ready=lambda: request(port, "GET", "/healthz")[0] == 200, log=log,
                         env={**env, "PORT": str(port), "LOG_LEVEL": "warning"}, timeout=60)  # fmt: skip


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str]]:
    """(status, headers) of one request to the service; status 0 when it did not answer."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, payload, {"content-type": "application/json"} if payload else {})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    except OSError:
        return 0, {}
    finally:
        conn.close()


def test_the_service_writes_through_postgres_rw_across_a_failover(
    group: Group, leader: Member, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sample service behind the group's Services (routed by the API server's EndpointSlices, which
    follow Patroni's role labels) while the leader's node dies: every write is a 201 or a quick 503
    with Retry-After, never a 500, and once a new leader is labelled, writes succeed again through it.

    The node's death is the member killed and its pod force-deleted, as an operator (or the node
    lifecycle controller) does with a lost node; the StatefulSet recreates the pod without a role."""
    ports: dict[str, int] = {}

    def port_of(address: str) -> int | None:
        if address not in ports:
            ports.update({pod["status"].get("podIP"): group.member(name).port for name, pod in group.pods().items()})
        return ports.get(address)

    rw = ServiceProxy(group.plane, group.namespace, group.names.rw, port_of)
    ro = ServiceProxy(group.plane, group.namespace, group.names.ro, port_of)
    password = write_secret(tmp_path / "password", PASSWORDS.app, os.getgid())
    env = {
        "DATABASE_URL": f"postgresql://{group.spec.user}@{LOOPBACK}:{rw.port}/{group.spec.database}",
        "DATABASE_REPLICA_URLS": f"postgresql://{group.spec.user}@{LOOPBACK}:{ro.port}/{group.spec.database}",
        "DATABASE_PASSWORD_FILE": str(password),
    }
    results: list[tuple[float, float, int, dict[str, str]]] = []
    stop = threading.Event()
    service: ServerProcess | None = None
    try:
        sample("migrate", env, tmp_path / "migrate.log")
        port = free_port()
        service = sample("serve", env, tmp_path / "serve.log", port)

        def load() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                user = {"email": f"failover-{n}@example.com", "name": f"User {n}", "password": "correct horse 1"}
                started = time.monotonic()
                status, headers = request(port, "POST", "/users", user)
                results.append((started, time.monotonic(), status, headers))
                stop.wait(0.05)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        wait_for(lambda: [r for r in results if r[2] == 201], 30, "a first user created")
        killed = time.monotonic()
        leader.kill()
        group.plane.kubectl("delete", "pod", leader.name, "-n", group.namespace, "--force", "--grace-period=0")
        wait_for(lambda: [r for r in results if r[0] > killed and r[2] == 201], 120, "users created after the kill")
        time.sleep(3)
        stop.set()
        loader.join(timeout=60)
    finally:
        stop.set()
        if service is not None:
            service.stop()
        rw.close()
        ro.close()
    statuses = [status for _, _, status, _ in results]
    refused = [(end - start, headers) for start, end, status, headers in results if status == 503]
    back = min(start for start, _, status, _ in results if start > killed and status == 201)
    report(
        capsys,
        f"sample service across a failover: {len(results)} writes, {statuses.count(201)} created, "
        f"{len(refused)} answered 503 (slowest {max((d for d, _ in refused), default=0):.2f}s); "
        f"writes succeeded again {back - killed:.1f}s after the kill",
    )
    assert set(statuses) <= {201, 503}, sorted(set(statuses))
    assert all("retry-after" in headers for _, headers in refused)
    assert all(seconds < 10 for seconds, _ in refused), "a refused write waited 10 s or more"
    # postgres-rw now sends every connection to the new leader alone
    new = group.leader()
    assert new is not None and new is not leader
    assert rw.changes[-1] == (new.port,)


@pytest.fixture(scope="module")
def sync_group(group: Group, control_plane: ControlPlane) -> Iterator[Group]:
    """Phase 5's group: synchronous_mode on. Started after the asynchronous one's tests, which it stops."""
    group.close()
    yield from start_group(control_plane, "patroni-sync", PatroniSpec(synchronous_mode=True))


def test_with_synchronous_mode_no_acknowledged_commit_is_lost(
    sync_group: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    leader = sync_group.wait_healthy()
    assert sync_group.sync_standby() in {m.name for m in sync_group.members if m is not leader}
    assert leader.value("SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'") == (
        sync_group.sync_standby()
    )
    assert kill_runs(sync_group, capsys, "sync_kills") == [0] * KILLS


def test_a_switchover_is_one_command_and_loses_nothing(sync_group: Group, capsys: pytest.CaptureFixture[str]) -> None:
    leader = sync_group.wait_healthy()
    # in synchronous mode only the synchronous standby can take over without losing a commit
    candidate = sync_group.member(str(sync_group.sync_standby()))
    writer = Writer(sync_group.dsn(), table="switchover")
    try:
        writer.wait_for_more()
        started = time.monotonic()
        command = ["patronictl", "-c", str(leader.run_dir), "switchover", "--leader", leader.name,
                   "--candidate", candidate.name, "--force"]  # fmt: skip
        done = subprocess.run(as_uid(UID, command), env=leader.env(), capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: sync_group.leader() is candidate, 60, "the candidate leading")
        writer.wait_for_more()
    finally:
        writer.stop()
    gap = writer.longest_gap(started)
    report(capsys, f"switchover under writes: writes blocked {gap:.2f}s, lost {len(lost(candidate, writer))}")
    assert lost(candidate, writer) == []
    assert gap < 5
    assert wait_for(lambda: leader.role() == "replica", 60, f"{leader.name} a replica")
