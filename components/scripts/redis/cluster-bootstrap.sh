#!/bin/sh
# shellcheck shell=dash
# Form or grow the Redis Cluster of REDIS_NODES (the bootstrap Job; the tests run this same file).
#
# Idempotent, safe to run again at any time:
#   - no member holds slots yet: create the cluster, REDIS_MASTERS masters with REDIS_REPLICAS
#     replicas each (the first REDIS_MASTERS members in list order become the masters);
#   - a cluster exists: every member meets those it does not see (new pods, pods back with new
#     IPs), empty members become masters until there are REDIS_MASTERS, the rest replicate the
#     master with the fewest replicas, and slots are rebalanced onto new masters; slots left open
#     by an interrupted migration are closed first.
# Exits 0 only when every member is connected, all 16384 slots are covered, every member reports
# cluster_state:ok and every replica has synchronized with its master; exits 1 when that is not
# so after REDIS_TIMEOUT_SECONDS (default 300), or when REDIS_NODES does not fit the shape.
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

# shellcheck disable=SC2086 # one line per member
count=$(printf '%s\n' $REDIS_NODES | grep -c .)
[ "$count" -eq $((REDIS_MASTERS * (1 + REDIS_REPLICAS))) ] ||
    fail "REDIS_NODES lists $count members; REDIS_MASTERS=$REDIS_MASTERS x (1 + REDIS_REPLICAS=$REDIS_REPLICAS) needs $((REDIS_MASTERS * (1 + REDIS_REPLICAS)))"

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
    log "creating the cluster: $members"
    # shellcheck disable=SC2086 # one argument per member
    redis-cli --cluster create $members --cluster-replicas "$REDIS_REPLICAS" --cluster-yes >&2
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

checked() { redis-cli --cluster check "$seed" >/dev/null 2>&1; }

# close slots left migrating or importing by an interrupted rebalance (keys go where they belong);
# slots of unreachable masters are never reassigned
close_open_slots() {
    if redis-cli --cluster check "$seed" 2>&1 | grep -q "slots are open"; then
        log "closing open slots left by an interrupted migration"
        redis-cli --cluster fix "$seed" --cluster-yes >&2 || true
    fi
}

# roles: one line per empty member (a master without slots), "master ADDRESS" while fewer than
# REDIS_MASTERS masters hold (or are chosen to take) slots, then "replica ADDRESS MASTER-ID" for the
# master with the fewest replicas
roles() {
    at "$seed" CLUSTER NODES | awk -v members="$members" -v want="$REDIS_MASTERS" '
        {
            address = $2; sub(/@.*/, "", address); id[address] = $1
            if ($3 ~ /master/ && $3 !~ /fail|handshake|noaddr/ && NF > 8) { serving[$1] = 1; masters++ }
            if ($3 ~ /slave/) replicas[$4]++
            if ($3 ~ /master/ && NF == 8) empty[address] = 1
        }
        END {
            n = split(members, list, " ")
            for (i = 1; i <= n; i++) {
                address = list[i]
                if (!(address in empty)) continue
                if (masters < want) { masters++; serving[id[address]] = 1; print "master", address; continue }
                best = ""
                for (m in serving) if (best == "" || replicas[m] < replicas[best] || (replicas[m] == replicas[best] && m < best)) best = m
                replicas[best]++
                print "replica", address, best
            }
        }'
}

grow() {
    local role address master new_masters=0
    roles >"${TMPDIR:-/tmp}/roles.$$"
    while read -r role address master; do
        if [ "$role" = master ]; then
            log "$address becomes a master"
            new_masters=$((new_masters + 1))
        else
            log "$address replicates $master"
            at "$address" CLUSTER REPLICATE "$master" >/dev/null
        fi
    done <"${TMPDIR:-/tmp}/roles.$$"
    rm -f "${TMPDIR:-/tmp}/roles.$$"
    if [ "$new_masters" -gt 0 ]; then
        # a new master still reporting the cluster down refuses the slots' keys (CLUSTERDOWN)
        retry "every member reports cluster_state:ok" all_ok
        retry "the members agree on the configuration" checked
        log "rebalancing slots onto $new_masters new master(s)"
        redis-cli --cluster rebalance "$seed" --cluster-use-empty-masters --cluster-yes >&2
    fi
}

# settled: the seed sees REDIS_MASTERS masters serving slots, no member without a role (a master
# without slots), and every master with a replica when replicas are wanted
settled() {
    at "$seed" CLUSTER NODES | awk -v want="$REDIS_MASTERS" -v replicas="$REDIS_REPLICAS" '
        $3 ~ /master/ && $3 !~ /fail/ && NF > 8 { serving[$1] = 1; masters++ }
        $3 ~ /master/ && NF == 8 { idle++ }
        $3 ~ /slave/ { covered[$4] = 1 }
        END {
            if (masters != want || idle) exit 1
            if (replicas > 0) for (m in serving) if (!(m in covered)) exit 1
        }'
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
    grow
fi
retry "the cluster is healthy" healthy
log "healthy: $count members, $REDIS_MASTERS masters, 16384 slots covered"
