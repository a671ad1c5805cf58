# shellcheck shell=dash
# Shared by cluster-bootstrap.sh, cluster-rejoin.sh, failover-watch.sh and node-stop.sh (sourced, not run).
#
# REDIS_NODES          every member as host:port, space separated, in pod order: pod DNS names in
#                      Kubernetes (redis-shard-0-0.redis-nodes:6379 ...), 127.x.y.z:port on loopback in the tests
# REDIS_PASSWORD_FILE  the file holding the password: read once, then given to each redis-cli in
#                      that process's own environment (REDISCLI_AUTH, the way redis-cli takes a
#                      password off its command line), never exported to the script's

redis_password=$(cat "${REDIS_PASSWORD_FILE:?file holding the password}") || exit 1

# redis_cli ARGS...: redis-cli with the password
redis_cli() { REDISCLI_AUTH=$redis_password redis-cli "$@"; }

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
    redis_cli -h "${address%:*}" -p "${address##*:}" "$@"
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

# roles IP:PORT LIST REPLICAS: what the members of LIST (ip:port, shard by shard, 1 + REPLICAS
# each) still have to become, as that node sees the cluster, one line each:
#   "master ADDRESS": the first empty member (a master without slots) of a new shard, one whose
#     members neither hold slots nor replicate a master that does;
#   "replica ADDRESS MASTER-ID": every other member of a shard whose master serves its slots, when
#     it is empty or replicates another master.
# A shard whose master holds slots but is failing gets nothing: Redis elects one of its replicas
# first. Prints nothing when every member has its role.
roles() {
    at "$1" CLUSTER NODES | awk -v members="$2" -v size="$((1 + $3))" '
        {
            address = $2; sub(/@.*/, "", address)
            gone = $3 ~ /(^|,)fail(,|$)|noaddr|handshake/
            # a live node wins over a gone one that had its address
            if (!(address in id) || !gone) id[address] = $1
            holds[$1] = $3 ~ /master/ && NF > 8
            serving[$1] = holds[$1] && $3 !~ /fail|noaddr|handshake/
            empty[$1] = $3 ~ /master/ && NF == 8 && !gone
            follows[$1] = $3 ~ /slave/ ? $4 : ""
        }
        END {
            n = split(members, list, " ")
            for (first = 1; first <= n; first += size) {
                master = ""; held = 0
                for (i = first; i < first + size; i++) {
                    node = id[list[i]]
                    if (holds[node] || holds[follows[node]]) held = 1
                    if (serving[node]) master = node
                }
                for (i = first; i < first + size && !held && master == ""; i++) {
                    if (empty[id[list[i]]]) { master = id[list[i]]; print "master", list[i] }
                }
                if (master == "") continue
                for (i = first; i < first + size; i++) {
                    node = id[list[i]]
                    if (node == master || node == "") continue
                    if (empty[node] || (follows[node] != "" && follows[node] != master)) print "replica", list[i], master
                }
            }
        }'
}

# replaced IP:PORT LIST: node IDs that node should forget: failed, holding no slots, replicated
# by nobody, and either announcing a hostname that another node ID now announces, connected, or
# at an address no member of LIST has any more. A pod that lost its volume (nodes.conf) and came
# back as a new node leaves such an ID behind, in the views of the others and, through their
# gossip, of the new node itself; it will never answer again. (A pod that kept its volume and is
# only slow to come back is met again by its address, ID and all.)
replaced() {
    at "$1" CLUSTER NODES | awk -v members=" $2 " '
        {
            address = $2; sub(/@.*/, "", address); host = $2; sub(/^[^,]*,?/, "", host)
            followed[$4] = 1
        }
        $3 ~ /(^|,)fail(,|$)/ && NF == 8 { old[$1] = host; at[$1] = address; next }
        $3 ~ /myself/ || ($8 == "connected" && $3 !~ /fail|handshake|noaddr/) { live[host] = 1 }
        END {
            for (key in old) {
                if (key in followed) continue
                if ((old[key] != "" && old[key] in live) || index(members, " " at[key] " ") == 0) print key
            }
        }'
}
