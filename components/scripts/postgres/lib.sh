# Shared by the Postgres scripts (sourced, not run).
#
# The local server is named by libpq's own variables: PGHOST (the socket directory in the pod,
# 127.0.0.1 in the tests), PGPORT, PGUSER, PGDATABASE.

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "${0##*/}" "$*" >&2; }

die() {
    log "$*"
    exit 1
}

# query SQL: one row of the local server's answer, columns separated by |
query() {
    psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"
}
