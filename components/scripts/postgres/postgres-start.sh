#!/bin/bash
# Command of the single server's container (phases 1-2); its arguments are postgres's (`-c key=value` ...).
#
# A data directory that holds a cluster (a restart) starts postgres itself. An empty one goes
# through the official image's entrypoint, which runs initdb
# with the password read from POSTGRES_PASSWORD_FILE, then the hooks in /docker-entrypoint-initdb.d
# (the last, forget-password.sh, takes the password out of its environment), then postgres.
# Either way the server never holds a password in its environment.
#
# PGDATA: the data directory
set -euo pipefail
: "${PGDATA:?}"

if [ -s "$PGDATA/PG_VERSION" ]; then
    unset POSTGRES_PASSWORD_FILE
    exec postgres "$@"
fi
exec docker-entrypoint.sh postgres "$@"
