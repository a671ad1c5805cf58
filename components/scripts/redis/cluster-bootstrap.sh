#!/bin/sh
# shellcheck shell=dash
# Form or grow the Redis Cluster of REDIS_NODES (the bootstrap Job; the tests run this same file).
#
# REDIS_NODES lists the members shard by shard: REDIS_MASTERS shards of 1 + REDIS_REPLICAS
# members each (in Kubernetes a shard is a StatefulSet whose pods never share a node). The first
# member of a shard starts as its master; the others replicate whichever member of their own
# shard serves its slots, never another shard's master.
#
# Idempotent, safe to run again at any time:
#   - no member holds slots yet: create the cluster from each shard's first member, and have the
#     other members replicate it;
#   - a cluster exists: every member meets those it does not see (new pods, pods back with new
#     IPs); a member without a role, or replicating another shard's master, replicates its shard's
#     master; a new shard's first member becomes a master and slots are rebalanced onto it; slots
#     left open by an interrupted migration are closed first.
# Exits 0 only when every member is connected, all 16384 slots are covered, every member reports
# cluster_state:ok and every replica has synchronized with the master of its shard; exits 1 when
# that is not so after REDIS_TIMEOUT_SECONDS (default 300), or when REDIS_NODES does not fit the shape.
set -eu
. "$(dirname "$0")/lib.sh"
: "${REDIS_NODES:?every member as host:port}"
: "${REDIS_MASTERS:?masters the slots are spread over}"
: "${REDIS_REPLICAS:?replicas per master}"
deadline=$(($(date +%s) + ${REDIS_TIMEOUT_SECONDS:-300}))

fail() {
    log "FAILED: $*"
    exit 1
}

# retry DESCRIPTION COMMAND...: run COMMAND every second until it succeeds or the deadline passes
retry() {
    local what=$1
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting until $what"
        sleep 1
    done
}

size=$((1 + REDIS_REPLICAS))
# shellcheck disable=SC2086 # one line per member
count=$(printf '%s\n' $REDIS_NODES | grep -c .)
[ "$count" -eq $((REDIS_MASTERS * size)) ] ||
    fail "REDIS_NODES lists $count members; REDIS_MASTERS=$REDIS_MASTERS x (1 + REDIS_REPLICAS=$REDIS_REPLICAS) needs $((REDIS_MASTERS * size))"

all_answer() {
    local member
    members=$(addresses "$REDIS_NODES") || return 1
    for member in $members; do
        [ "$(at "$member" PING 2>/dev/null)" = PONG ] || return 1
    done
}

# the first member that knows of assigned slots: a cluster exists
seed() {
    local member
    for member in $members; do
        if [ "$(info "$member" cluster_slots_assigned)" -gt 0 ]; then
            printf '%s\n' "$member"
            return
        fi
    done
}

create() {
    local member
    for member in $members; do
        # members that met in an interrupted earlier run, before any slot was assigned
        [ "$(info "$member" cluster_known_nodes)" -eq 1 ] || at "$member" CLUSTER RESET SOFT >/dev/null
    done
    # shellcheck disable=SC2086 # one line per member
    firsts=$(printf '%s\n' $members | awk -v size="$size" 'NR % size == 1')
    log "creating the cluster from each shard's first member:" $firsts
    # shellcheck disable=SC2086 # one argument per master
    redis_cli --cluster create $firsts --cluster-replicas 0 --cluster-yes >&2
}

all_connected() {
    local member
    for member in $members; do
        meet_unseen "$member" "$members"
    done
    for member in $members; do
        [ -z "$(unseen "$member" "$members")" ] || return 1
    done
}

all_ok() {
    local member
    for member in $members; do
        [ "$(info "$member" cluster_state)" = ok ] || return 1
    done
}

checked() { redis_cli --cluster check "$seed" >/dev/null 2>&1; }

# close slots left migrating or importing by an interrupted rebalance (keys go where they belong);
# slots of unreachable masters are never reassigned
close_open_slots() {
    if redis_cli --cluster check "$seed" 2>&1 | grep -q "slots are open"; then
        log "closing open slots left by an interrupted migration"
        redis_cli --cluster fix "$seed" --cluster-yes >&2 || true
    fi
}

assign_roles() {
    local role address master new_masters=0
    roles "$seed" "$members" "$REDIS_REPLICAS" >"${TMPDIR:-/tmp}/roles.$$"
    while read -r role address master; do
        if [ "$role" = master ]; then
            log "$address becomes a master"
            new_masters=$((new_masters + 1))
        else
            log "$address replicates $master, the master of its shard"
            at "$address" CLUSTER REPLICATE "$master" >/dev/null
        fi
    done <"${TMPDIR:-/tmp}/roles.$$"
    rm -f "${TMPDIR:-/tmp}/roles.$$"
    if [ "$new_masters" -gt 0 ]; then
        # a new master still reporting the cluster down refuses the slots' keys (CLUSTERDOWN)
        retry "every member reports cluster_state:ok" all_ok
        retry "the members agree on the configuration" checked
        log "rebalancing slots onto $new_masters new master(s)"
        redis_cli --cluster rebalance "$seed" --cluster-use-empty-masters --cluster-yes >&2
    fi
}

# settled: the seed sees REDIS_MASTERS masters serving slots and every member has its role in its shard
settled() {
    [ -z "$(roles "$seed" "$members" "$REDIS_REPLICAS")" ] || return 1
    at "$seed" CLUSTER NODES | awk -v want="$REDIS_MASTERS" '
        $3 ~ /master/ && $3 !~ /fail/ && NF > 8 { masters++ }
        END { exit masters != want }'
}

# replicating: a replica has its link to its master up (it has synchronized once and streams)
replicating() {
    at "$1" INFO replication | tr -d '\r' | awk -F: '
        $1 == "role" { role = $2 } $1 == "master_link_status" { link = $2 }
        END { exit !(role == "master" || link == "up") }'
}

healthy() {
    local member
    for member in $members; do
        [ "$(info "$member" cluster_state)" = ok ] || return 1
        replicating "$member" || return 1
        [ "$(info "$member" cluster_slots_ok)" -eq 16384 ] || return 1
        [ "$(info "$member" cluster_known_nodes)" -eq "$count" ] || return 1
    done
    settled && checked
}

retry "every member resolves and answers PING" all_answer
seed=$(seed)
if [ -z "$seed" ]; then
    create
    seed=$(seed)
    retry "every member sees every other connected" all_connected
else
    log "a cluster exists (seed $seed)"
    retry "every member sees every other connected" all_connected
    close_open_slots
fi
assign_roles
retry "the cluster is healthy" healthy
log "healthy: $count members, $REDIS_MASTERS masters, 16384 slots covered"
