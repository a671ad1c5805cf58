#!/bin/sh
# shellcheck shell=dash
# Sidecar of every cluster pod: promotes this replica as soon as its master has been down for the
# node timeout, instead of waiting for Redis's own failure detection (about 1.5 node timeouts + 1 s:
# peers flag the master PFAIL, exchange failure reports by gossip, then the replica waits 0.5-1 s
# plus its rank before its election).
#
# Every REDIS_WATCH_INTERVAL seconds (default 0.5) a master reads its role and does nothing more.
# A replica reads its own clock and CLUSTER NODES; when its master (REDIS_SELF is this node,
# host:port) has sent it no PONG for longer than REDIS_NODE_TIMEOUT_MS (the cluster-node-timeout),
# it asks every master serving slots for the same, each by its own clock and CLUSTER NODES (clocks
# need not agree), and runs CLUSTER FAILOVER FORCE (an election at once, the masters vote with
# FORCEACK) only when all of these hold:
#   - a majority of the masters serving slots, the silent one counted (the election's quorum), have
#     not heard from it for longer than the node timeout either: a master that only this replica
#     cannot reach is left alone;
#   - it has been unreachable for longer than the node timeout: this loop has seen this node's link
#     to it down that long, or this node or a master has had a ping to it unanswered that long. Its
#     last PONG alone does not tell: it may be up to half a node timeout older than the crash, and a
#     master restarted or blocked for less than the node timeout keeps its slots (as with Redis);
#   - this replica is the best one of its master: the highest replication offset among the
#     replicas that answer, ties going to the lowest node ID (the others leave it to that one);
#   - Redis would let it take over automatically (FORCE skips these checks): cluster-replica-no-failover
#     is off, and its data is recent enough: synchronized once, and the master lost no longer ago
#     than repl-ping-replica-period + node timeout x cluster-replica-validity-factor (after the node
#     timeout itself).
# After a failover it leaves the master alone for a node timeout. Whatever is missing (no quorum, a
# node that does not answer within a second) leaves the failover to Redis, as without this loop.
# Writes REDIS_RUN_DIR/failover-watch.alive every round for the container's probes.
set -u
. "$(dirname "$0")/lib.sh"
: "${REDIS_SELF:?this node as host:port}"
: "${REDIS_RUN_DIR:?directory of the liveness heartbeat file}"
: "${REDIS_NODE_TIMEOUT_MS:?cluster-node-timeout of redis.conf, in ms}"
interval=${REDIS_WATCH_INTERVAL:-0.5}
timeout_ms=$REDIS_NODE_TIMEOUT_MS
role=""
quiet_until=0
lost_master=""
lost_since=0
noted=""
newline='
'

# cli IP:PORT COMMAND...: one command; nothing from a node that does not answer within a second (a
# blocked node must not block this loop)
cli() {
    local address=$1
    shift
    REDISCLI_AUTH=$redis_password timeout 1 redis-cli -h "${address%:*}" -p "${address##*:}" "$@" 2>/dev/null
}

# ask IP:PORT LINES: the commands of LINES, one a line, in one call (read from stdin: dearer than
# cli); their replies one after the other; nothing from a node that does not answer within a second
ask() {
    REDISCLI_AUTH=$redis_password timeout 1 redis-cli -h "${1%:*}" -p "${1##*:}" 2>/dev/null <<EOF
$2
EOF
}

# view IP:PORT: the node's clock in ms, then its CLUSTER NODES (one call); nothing if it does not answer
view() {
    ask "$1" "TIME
CLUSTER NODES" | awk '
        NR == 1 { if ($1 !~ /^[0-9]+$/) exit; seconds = $1; next }
        NR == 2 { if ($1 !~ /^[0-9]+$/) exit; printf "%.0f\n", seconds * 1000 + int($1 / 1000); next }
        NF >= 8 { print }'
}

# silence ID: from a view on stdin, "SILENT UNANSWERED LINK" for node ID, in ms of that node's clock:
# since its last PONG, since the ping it has not answered (0: none pending); and its link's state
silence() {
    awk -v id="$1" '
        NR == 1 { now = $1 }
        NR > 1 && $1 == id { printf "%.0f %.0f %s\n", now - $6, ($5 > 0 ? now - $5 : 0), $8 }'
}

# glance: from this node's view on stdin, "master" when it is one, else
# "slave NOW MASTER-ID SILENT UNANSWERED LINK" (see silence), or "slave" if its master serves no slots
glance() {
    awk '
        NR == 1 { now = $1; next }
        $3 ~ /myself/ { role = $3 ~ /master/ ? "master" : "slave"; master = $4 }
        { entry[$1] = $0 }
        END {
            if (role != "slave" || split(entry[master], f, " ") < 9) { print role; exit }
            printf "slave %.0f %s %.0f %.0f %s\n", now, master, now - f[6], (f[5] > 0 ? now - f[5] : 0), f[8]
        }'
}

# plan MASTER-ID: from this node's view on stdin, who counts, as lines
#   voters N IP:PORT...  (N masters serve slots, MASTER-ID counted; the others' addresses)
#   sibling IP:PORT      (every other replica of MASTER-ID not flagged failing)
#   address IP:PORT      (MASTER-ID's)
plan() {
    awk -v master="$1" '
        NR == 1 { next }
        $3 ~ /myself/ { me = $1 }
        { address = $2; sub(/@.*/, "", address); addr[$1] = address; flags[$1] = $3; of[$1] = $4 }
        $3 ~ /master/ && NF > 8 { serving[$1] = 1 }
        END {
            line = ""
            for (id in serving) { count++; if (id != master) line = line " " addr[id] }
            print "voters", count line
            for (id in of) if (of[id] == master && id != me && flags[id] !~ /fail|handshake|noaddr/) print "sibling", addr[id]
            print "address", addr[master]
        }'
}

# replication IP:PORT: "ID OFFSET" of a replica (its node ID, slave_repl_offset), "ID master" of a master
replication() {
    ask "$1" "CLUSTER MYID
INFO replication" | awk -F: '
        { sub(/\r$/, "") }
        NR == 1 { id = $1 }
        $1 == "role" && $2 == "master" { print id, "master" }
        $1 == "slave_repl_offset" { print id, $2 }'
}

# may_promote: Redis's own rules would let this replica take over automatically: failover allowed,
# and its data recent enough (the data age of clusterHandleSlaveFailover)
may_promote() {
    ask "$self" "INFO replication
CONFIG GET cluster-replica-no-failover
CONFIG GET cluster-replica-validity-factor
CONFIG GET repl-ping-replica-period" | awk -F: -v timeout="$timeout_ms" '
        { sub(/\r$/, "") }
        $1 == "master_link_status" { link = $2 }
        $1 == "master_last_io_seconds_ago" { io = $2 }
        $1 == "master_link_down_since_seconds" { down = $2 }
        previous == "cluster-replica-no-failover" { barred = $0 }
        previous == "cluster-replica-validity-factor" { factor = $0 }
        previous == "repl-ping-replica-period" { period = $0 }
        { previous = $0 }
        END {
            if (barred != "no") exit 1
            if (link == "up") age = io * 1000
            else if (down == "" || down < 0) exit 1
            else age = down * 1000
            if (age > timeout) age -= timeout
            exit factor == "" || period == "" || (factor > 0 && age > period * 1000 + timeout * factor)
        }'
}

# note KEY MESSAGE: log MESSAGE once while KEY (the reason not to act) stays the same
note() {
    [ "$1" = "$noted" ] && return
    noted=$1
    log "$2"
}

# watch: one round of a replica (see the header); sets `role`, fails over when every check holds
watch() {
    local now master_id silent unanswered link lost mine layout address voters voter total quorum report agree
    local sibling ranking best
    # shellcheck disable=SC2046 # the words of one line
    set -- $(view "$self" | glance)
    role=${1:-}
    [ $# -eq 6 ] || return 0
    now=$2 master_id=$3 silent=$4 unanswered=$5 link=$6
    # since when (this node's clock) this loop has seen the link to the master down, every round
    lost=0
    if [ "$link" != disconnected ]; then
        lost_master=""
    elif [ "$lost_master" != "$master_id" ]; then
        lost_master=$master_id lost_since=$now
    else
        lost=$((now - lost_since))
    fi
    if [ "$silent" -le "$timeout_ms" ]; then
        noted=""
        return 0
    fi
    [ "$now" -ge "$quiet_until" ] || return 0

    mine=$(view "$self")
    layout=$(printf '%s\n' "$mine" | plan "$master_id")
    address=$(printf '%s\n' "$layout" | awk '$1 == "address" { print $2 }')
    voters=$(printf '%s\n' "$layout" | awk '$1 == "voters" { $1 = $2 = ""; print }')
    total=$(printf '%s\n' "$layout" | awk '$1 == "voters" { print $2 }')
    quorum=$((${total:-0} / 2 + 1))
    # the masters' own views, all at once: who has not heard from it, and the oldest unanswered ping
    report=$(
        for voter in $voters; do
            view "$voter" | silence "$master_id" &
        done
        wait
    )
    # shellcheck disable=SC2046 # two numbers
    set -- $(printf '%s\n' "$report" | awk -v timeout="$timeout_ms" -v unanswered="$unanswered" -v lost="$lost" '
        BEGIN { if (lost > unanswered) unanswered = lost }
        $1 > timeout { agree++ }
        $2 > unanswered { unanswered = $2 }
        END { printf "%d %.0f\n", agree, unanswered }')
    agree=$1 unanswered=$2
    if [ "$agree" -lt "$quorum" ]; then
        note "quorum $master_id $agree" "master $master_id ($address) unheard here, but by only $agree of $total masters (quorum $quorum): left to Redis"
        return 0
    fi
    if [ "$unanswered" -le "$timeout_ms" ]; then
        note "down $master_id" "master $master_id ($address) unheard by $agree of $total masters, unreachable for less than $timeout_ms ms"
        return 0
    fi
    # the best replica of the master acts: highest offset, then lowest node ID; none once one of
    # them is a master (it has just taken over)
    ranking=$(
        replication "$self" &
        for sibling in $(printf '%s\n' "$layout" | awk '$1 == "sibling" { print $2 }'); do
            replication "$sibling" &
        done
        wait
    )
    best=$(printf '%s\n' "$ranking" | awk '$2 == "master" { print $1; exit }')
    if [ -n "$best" ]; then
        note "done $master_id" "master $master_id ($address) is down; replica $best has taken over"
        return 0
    fi
    best=$(printf '%s\n' "$ranking" | LC_ALL=C sort -k2,2nr -k1,1 | awk 'NR == 1 { print $1 }')
    if [ "$best" != "$(printf '%s\n' "$mine" | awk '$3 ~ /myself/ { print $1 }')" ]; then
        note "best $master_id" "master $master_id ($address) is down; replica ${best:-unknown} goes first (higher offset, or the same and a lower node ID): left to it"
        return 0
    fi
    if ! may_promote; then
        note "stale $master_id" "master $master_id ($address) is down, but this replica may not take over (cluster-replica-no-failover, or its data is too old): left to Redis"
        return 0
    fi
    log "master $master_id ($address) unheard for over $timeout_ms ms by $agree of $total masters (quorum $quorum), unreachable for $unanswered ms: CLUSTER FAILOVER FORCE"
    log "CLUSTER FAILOVER FORCE: $(cli "$self" CLUSTER FAILOVER FORCE)"
    quiet_until=$((now + timeout_ms))
}

self=$(addresses "$REDIS_SELF") || true
while :; do
    # a node that does not resolve yet (its pod's address) is looked up again every round
    [ -n "$self" ] || self=$(addresses "$REDIS_SELF") || true
    if [ "$role" = slave ]; then
        watch
    elif [ -n "$self" ]; then
        role=$(cli "$self" ROLE)
        role=${role%%"$newline"*}
    fi
    : >"$REDIS_RUN_DIR/failover-watch.alive"
    sleep "$interval"
done
