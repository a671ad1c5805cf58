#!/bin/sh
# shellcheck shell=dash
# Sidecar of every cluster pod: keeps this node connected to every member of the cluster.
#
# A pod that comes back keeps its node ID (nodes.conf on its volume) and its name, but gets a new
# IP. One pod alone is found again through gossip; when every pod restarts at once, nobody knows
# anyone's new address. Every REDIS_REJOIN_INTERVAL seconds this resolves the members' names and
# has this node (REDIS_SELF, host:port) meet those it does not see connected. A node that is in no
# cluster yet is left alone: forming and growing the cluster is the bootstrap Job's work.
#
# The members (host:port, space separated) are read from REDIS_NODES_FILE on every round: a
# mounted ConfigMap key, updated in place after a scale-out without restarting the pods.
set -eu
. "$(dirname "$0")/lib.sh"
: "${REDIS_NODES_FILE:?file listing every member as host:port}"
: "${REDIS_SELF:?this node as host:port}"
: "${REDIS_RUN_DIR:?directory of the liveness heartbeat file}"
interval=${REDIS_REJOIN_INTERVAL:-10}

while :; do
    known=0
    if self=$(addresses "$REDIS_SELF"); then known=$(info "$self" cluster_known_nodes 2>/dev/null || true); fi
    if [ "${known:-0}" -gt 1 ]; then
        members=$(addresses "$(cat "$REDIS_NODES_FILE")" || true)
        meet_unseen "$self" "$members" || true
    fi
    touch "$REDIS_RUN_DIR/rejoin.alive"
    sleep "$interval"
done
