#!/bin/sh
# shellcheck shell=dash
# Sidecar of every cluster pod: keeps this node connected to every member, and in its role.
#
# A pod that comes back keeps its node ID (nodes.conf on its volume) and its name, but gets a new
# IP. One pod alone is found again through gossip; when every pod restarts at once, nobody knows
# anyone's new address. Every REDIS_REJOIN_INTERVAL seconds this resolves the members' names and
# has this node (REDIS_SELF, host:port) meet those it does not see connected. A node that is in no
# cluster yet is left alone: forming and growing the cluster is the bootstrap Job's work.
#
# It also heals this node's part of the cluster, without waiting for a Job: the node forgets the
# old ID of a member that came back as a new node (its volume was lost), and, when it has no role
# or replicates another shard's master, it replicates the master of its own shard (the members are
# listed shard by shard, 1 + REDIS_REPLICAS each, as for the bootstrap Job).
#
# The members (host:port, space separated) are read from REDIS_NODES_FILE on every round: a
# mounted ConfigMap key, updated in place after a scale-out without restarting the pods.
set -eu
. "$(dirname "$0")/lib.sh"
: "${REDIS_NODES_FILE:?file listing every member as host:port}"
: "${REDIS_SELF:?this node as host:port}"
: "${REDIS_RUN_DIR:?directory of the liveness heartbeat file}"
: "${REDIS_REPLICAS:?replicas per master}"
interval=${REDIS_REJOIN_INTERVAL:-10}

while :; do
    known=0
    if self=$(addresses "$REDIS_SELF"); then known=$(info "$self" cluster_known_nodes 2>/dev/null || true); fi
    if [ "${known:-0}" -gt 1 ]; then
        resolved=true
        members=$(addresses "$(cat "$REDIS_NODES_FILE")") || resolved=false
        meet_unseen "$self" "$members" || true
        # with every member resolved, the list holds every current address, and positions are shards
        if $resolved; then
            for old in $(replaced "$self" "$members" || true); do
                log "$self forgets $old: failed, and replaced by a new node"
                at "$self" CLUSTER FORGET "$old" >/dev/null || true
            done
            master=$(roles "$self" "$members" "$REDIS_REPLICAS" | awk -v me="$self" '$1 == "replica" && $2 == me { print $3 }')
            if [ -n "$master" ]; then
                log "$self replicates $master, the master of its shard"
                at "$self" CLUSTER REPLICATE "$master" >/dev/null || true
            fi
        fi
    fi
    touch "$REDIS_RUN_DIR/rejoin.alive"
    sleep "$interval"
done
