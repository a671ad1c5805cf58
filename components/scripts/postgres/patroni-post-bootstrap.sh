#!/bin/sh
# Patroni's post_bootstrap hook, run once on the member that initialised the group: creates the
# service's database (POSTGRES_DB), owned by the bootstrap superuser. Patroni passes the
# superuser's connection URL as the only argument and has created the replication role already.
set -eu
. "$(dirname "$0")/lib.sh"

: "${1:?usage: patroni-post-bootstrap.sh CONNECTION_URL}" "${POSTGRES_DB:?}"
psql -X -q -v ON_ERROR_STOP=1 -d "$1" -v db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
\gexec
SQL
log "database $POSTGRES_DB is there"
