#!/bin/bash
# Runs once, when the primary's data directory is first initialised: the official image's
# entrypoint executes it from /docker-entrypoint-initdb.d while its temporary server is up.
# Creates the replication role and lets it connect for streaming replication with its password.
#
# PGDATA                the data directory;  PGHOST/PGPORT/PGUSER/PGDATABASE: the local server
# REPLICATION_USER      role replicas connect as
# REPLICATION_PASSWORD  its password (from the credentials Secret)
set -euo pipefail
: "${PGDATA:?}" "${REPLICATION_USER:?}" "${REPLICATION_PASSWORD:?}"

psql -X -q -v ON_ERROR_STOP=1 -v user="$REPLICATION_USER" -v password="$REPLICATION_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')
\gexec
SQL
# `host all all all` (the image's own entry) does not cover replication connections
printf 'host replication %s all scram-sha-256\n' "$REPLICATION_USER" >>"$PGDATA/pg_hba.conf"
psql -X -q -v ON_ERROR_STOP=1 -c 'SELECT pg_reload_conf()' >/dev/null
printf '%s: replication role %s ready\n' "${0##*/}" "$REPLICATION_USER" >&2
