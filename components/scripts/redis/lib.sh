# shellcheck shell=dash
# Shared by cluster-bootstrap.sh, cluster-rejoin.sh, failover-watch.sh and node-stop.sh (sourced, not run).
#
# REDIS_NODES    every member as host:port, space separated, in pod order: pod DNS names in
#                Kubernetes (redis-0.redis-nodes:6379 ...), 127.0.0.x:port on loopback in the tests
# REDISCLI_AUTH  the password; redis-cli reads it from the environment

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# resolve HOST: its current IPv4 address (an address is printed as is); nothing if it does not resolve
resolve() {
    case $1 in
        *[!0-9.]*) getent ahostsv4 "$1" 2>/dev/null | awk 'NR == 1 { print $1 }' ;;
        *) printf '%s\n' "$1" ;;
    esac
}

# addresses LIST: LIST with every host resolved to ip:port; fails (printing the others) if one does not resolve
addresses() {
    local node ip out="" status=0
    for node in $1; do
        ip=$(resolve "${node%:*}")
        if [ -n "$ip" ]; then out="$out $ip:${node##*:}"; else status=1; fi
    done
    printf '%s\n' "${out# }"
    return $status
}

# at IP:PORT COMMAND...: one redis-cli command against that node
at() {
    local address=$1
    shift
    redis-cli -h "${address%:*}" -p "${address##*:}" "$@"
}

# info IP:PORT FIELD: one field of CLUSTER INFO
info() {
    at "$1" CLUSTER INFO | tr -d '\r' | awk -F: -v field="$2" '$1 == field { print $2 }'
}

# unseen IP:PORT LIST: the members of LIST that node does not see connected at that address
unseen() {
    local view member
    view=$(at "$1" CLUSTER NODES) || return 1
    for member in $2; do
        [ "$member" = "$1" ] && continue
        printf '%s\n' "$view" | awk -v address="$member@" '
            index($2, address) == 1 && $8 == "connected" && $3 !~ /handshake|noaddr|fail/ { found = 1 }
            END { exit !found }' || printf '%s\n' "$member"
    done
}

# meet_unseen IP:PORT LIST: that node meets every member of LIST it does not see connected. A member
# it knows under an old address (a pod back with a new IP) answers with its known node ID, and the
# node updates that member's address: the same node, not a new one.
meet_unseen() {
    local member
    for member in $(unseen "$1" "$2"); do
        log "$1 meets $member"
        at "$1" CLUSTER MEET "${member%:*}" "${member##*:}" >/dev/null || true
    done
}
