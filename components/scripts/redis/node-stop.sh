#!/bin/sh
# shellcheck shell=dash
# preStop of every cluster node: a master hands its slots to a replica before it stops.
#
# Runs before Kubernetes sends SIGTERM (rolling update, drain, scale-down of a pod). If this node
# (REDIS_SELF, host:port) is a master serving slots with a replica in sync, that replica runs
# CLUSTER FAILOVER: the master pauses its clients until the replica has every write, then the
# replica takes over. Writes wait well under a second instead of failing until node timeout has
# passed and an election has run. Waits up to REDIS_HANDOVER_SECONDS (default 10); always exits 0
# so that the pod stops anyway.
set -u
. "$(dirname "$0")/lib.sh"
: "${REDIS_SELF:?this node as host:port}"
self=$(addresses "$REDIS_SELF") || exit 0
wait_seconds=${REDIS_HANDOVER_SECONDS:-10}

role() { at "$self" ROLE 2>/dev/null | head -n 1; }

# a replica of this master whose link is up, as ip:port
replica=$(at "$self" CLUSTER NODES 2>/dev/null | awk '
    $3 ~ /myself/ && $3 ~ /master/ && NF > 8 { me = $1 }
    $3 ~ /slave/ && $3 !~ /fail/ && $8 == "connected" { address = $2; sub(/@.*/, "", address); replica[$4] = address }
    END { if (me in replica) print replica[me] }')
[ "$(role)" = master ] && [ -n "$replica" ] || exit 0

log "$self hands its slots to $replica"
at "$replica" CLUSTER FAILOVER >/dev/null || exit 0
waited=0
while [ "$(role)" = master ] && [ "$waited" -lt "$((wait_seconds * 10))" ]; do
    sleep 0.1
    waited=$((waited + 1))
done
log "$self is now $(role)"
