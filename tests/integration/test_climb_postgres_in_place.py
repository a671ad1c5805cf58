"""Climbing from phase 2 to phase 3 in place: Patroni adopts the single server's data directory.

Phase 2 runs one plain PostgreSQL server (StatefulSet `postgres`, postgres-start.sh); phase 3
updates that same StatefulSet in place (same name, same claim template `pgdata`, same PGDATA) to
run Patroni, and scales it to three pods. Here, for real:

1. the kit's phase-2 objects go to the simulated cluster's API server, and the phase-2 pod's
   container is run on loopback as the rendered StatefulSet runs it (the image entrypoint's initdb
   + primary-init.sh, then postgres-start.sh with the rendered args and env); rows are written
   and the pod is stopped as the rolling update stops it (the image's STOPSIGNAL, SIGINT: a fast
   shutdown);
2. the kit's phase-3 objects are applied over them (the StatefulSet and the claim keep their uid),
   and member `postgres-0` is started by Patroni (testsupport/patroni.py) on that very directory:
   it must take the leader lock with the phase-2 system identifier and the phase-2 rows, not
   refuse the directory nor initialise a new one, and take writes;
3. `postgres-1` and `postgres-2` start on empty directories, as the scaled StatefulSet's new pods,
   and must clone the old rows from it.

Run with -s to see what Patroni logged while adopting the directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.climb_patroni import PHASE2, PHASE3, SYSID, container, meta, phase2_pod, write_scripts
from bench.postgres_support import Member as Phase2Member
from bench.postgres_support import start_primary
from components import postgres
from testsupport.control_plane import ControlPlane
from testsupport.patroni import PASSWORDS, Group, Member
from testsupport.postgres import postgres_binary
from testsupport.process import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

NAMESPACE = "climb-postgres"
ROWS = 5000
# what a client of the service sees of the data: every row, in order, and where the sequence stands
CHECKSUM = "SELECT md5(string_agg(id || ':' || body, ',' ORDER BY id)) FROM climb_items"
PATRONI_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+: ")  # Postgres writes a dot


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[climb 2->3] {line}")


def control_data(data: Path) -> dict[str, str]:
    """pg_controldata of a stopped data directory."""
    done = subprocess.run([postgres_binary("pg_controldata"), str(data)], capture_output=True, text=True, check=True)
    return {key: value.strip() for key, value in (line.split(":", 1) for line in done.stdout.splitlines())}


def snapshot(member: Phase2Member | Member) -> dict[str, Any]:
    """The rows' count and checksum, the sequence's position and the cluster's system identifier."""
    return {
        "rows": member.value("SELECT count(*) FROM climb_items"),
        "checksum": member.value(CHECKSUM),
        "sequence": member.value("SELECT last_value FROM climb_seq"),
        "sysid": member.value(SYSID),
    }


def patroni_lines(member: Member) -> str:
    """Patroni's own log lines (not Postgres's, nor its tools' output): what it did with the directory."""
    return "\n".join(line for line in member.log().splitlines() if PATRONI_LINE.match(line))


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], object]]]:
    """What undoes what the test started (servers, groups, folders), run at the end, last first."""
    undo: list[Callable[[], object]] = []
    yield undo
    errors = []
    for step in reversed(undo):
        try:
            step()
        except Exception as error:  # the other steps still run
            errors.append(error)
    if errors:
        raise errors[0]


def test_patroni_adopts_the_phase_2_data_directory_and_replicates_it(
    control_plane: ControlPlane, cleanup: list[Callable[[], object]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert PHASE2.replicas == 0 and PHASE3.replicas == 2  # the ladder's phases 2 and 3
    plane = control_plane

    # --- phase 2: the kit's single server, in the API server and on loopback
    phase2 = postgres.postgres_objects(meta(NAMESPACE), PHASE2, PASSWORDS, postgres.MAIN)
    plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}, *phase2])
    wait_for(lambda: plane.get("pvc", "-n", NAMESPACE)["items"], 60, "the phase-2 claim")
    sts_uid = plane.get("statefulset", postgres.MAIN.members, "-n", NAMESPACE)["metadata"]["uid"]
    claim = f"{postgres.DATA_VOLUME}-{postgres.MAIN.members}-0"
    claim_uid = plane.get("pvc", claim, "-n", NAMESPACE)["metadata"]["uid"]

    scripts = write_scripts(phase2)
    cleanup.append(lambda: shutil.rmtree(scripts, ignore_errors=True))
    primary = start_primary(PHASE2, PASSWORDS, scripts)  # the first start: entrypoint initdb + primary-init.sh
    cleanup.append(primary.close)
    primary.server.stop()  # the container's later starts: postgres-start.sh on the existing cluster
    pod = phase2_pod(primary, container(phase2))
    try:
        assert Path(f"/proc/{pod.proc.pid}/exe").resolve().name == "postgres"  # the script exec'd postgres
        assert primary.run("ready.sh").returncode == 0  # the pod's readiness probe
        primary.execute("CREATE SEQUENCE climb_seq")
        primary.execute(
            "CREATE TABLE climb_items (id bigint PRIMARY KEY DEFAULT nextval('climb_seq'), body text NOT NULL)"
        )
        primary.execute(f"INSERT INTO climb_items (body) SELECT md5(i::text) FROM generate_series(1, {ROWS}) AS i")
        before = snapshot(primary)
        assert before["rows"] == ROWS and before["sequence"] == ROWS
        # the rolling update deletes the pod: the image's STOPSIGNAL (SIGINT) is a fast shutdown
        pod.proc.send_signal(signal.SIGINT)
        assert pod.proc.wait(timeout=60) == 0
    finally:
        pod.stop()
    data = primary.server.data
    control = control_data(data)
    assert control["Database cluster state"] == "shut down"
    assert control["Database system identifier"] == before["sysid"]

    # --- phase 3: the same StatefulSet updated in place, its pod 0 on the same volume
    group = Group(plane, NAMESPACE, PHASE3)  # applies the phase-3 objects over phase 2's
    cleanup.append(group.close)
    assert plane.get("statefulset", postgres.MAIN.members, "-n", NAMESPACE)["metadata"]["uid"] == sts_uid
    assert plane.get("pvc", claim, "-n", NAMESPACE)["metadata"]["uid"] == claim_uid
    leader, *replicas = group.members
    assert leader.name == f"{postgres.MAIN.members}-0"
    volume = leader.root / "data"
    inode = data.stat().st_ino
    os.rename(data, volume)  # the claim's volume, mounted at the new pod's PGDATA: the same directory
    assert volume.stat().st_ino == inode

    leader.start()
    try:
        wait_for(lambda: group.leader() is leader, 90, f"{leader.name} leading")
    except TimeoutError as error:
        raise AssertionError(f"{error}; its log:\n{leader.log()[-6000:]}") from error
    report(capsys, f"{leader.name}'s Patroni on the phase-2 directory:\n{patroni_lines(leader)}")
    adopted = snapshot(leader)
    assert adopted["sysid"] == before["sysid"], "Patroni initialised a new cluster:\n" + leader.log()
    assert adopted == before
    # the group is the phase-2 cluster, and the kit's `bootstrap.dcs` seeded its settings although no
    # bootstrap ran (the new leader writes them in the loop after it took the lock)
    dcs = wait_for(lambda: group.annotations("config").get("config") and group.annotations("config"), 30, "config")
    assert dcs.get("initialize") == before["sysid"]
    settings = json.loads(dcs["config"])
    assert (settings["ttl"], settings["postgresql"]["use_pg_rewind"]) == (PHASE3.ha.ttl, True)
    assert group.leader_annotation() == leader.name
    assert leader.value("SHOW wal_log_hints") == "on"  # pg_rewind works on this directory from now on
    # Patroni started it as a standby ("starting as a secondary"), then promoted it: a new timeline
    timeline = leader.value("SELECT timeline_id FROM pg_control_checkpoint()")
    assert timeline == 2
    checksums = leader.value("SHOW data_checksums")
    # it takes writes, the sequence going on from where phase 2 left it
    with leader.connect(autocommit=True) as conn:
        conn.execute("INSERT INTO climb_items (body) SELECT md5(i::text) FROM generate_series(1, 100) AS i")
    assert leader.value("SELECT max(id) FROM climb_items") == ROWS + 100

    # --- the scaled StatefulSet's new pods: empty volumes, cloned from the adopted leader
    for member in replicas:
        member.start()
    assert group.wait_healthy(120) is leader
    after = snapshot(leader)
    assert after["rows"] == ROWS + 100 and after["sysid"] == before["sysid"]
    replayed = f"SELECT pg_last_wal_replay_lsn() >= '{leader.value('SELECT pg_current_wal_lsn()')}'::pg_lsn"
    for member in replicas:
        wait_for(lambda m=member: m.value(replayed), 30, f"{member.name} replayed")
        assert member.value("SELECT pg_is_in_recovery()") is True
        copy = snapshot(member)
        # a standby shows a sequence as last WAL-logged: up to 32 values ahead of the primary's
        assert after["sequence"] <= copy.pop("sequence") <= after["sequence"] + 32
        assert copy == {key: value for key, value in after.items() if key != "sequence"}
    slots = leader.value("SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE active")
    assert slots == ",".join(m.name.replace("-", "_") for m in replicas)
    report(
        capsys,
        f"adopted: system identifier {before['sysid']} kept, {ROWS} rows (md5 {before['checksum']}) on the "
        f"leader and on {', '.join(m.name for m in replicas)}; timeline {timeline}; data_checksums {checksums}",
    )
