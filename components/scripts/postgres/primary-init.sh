#!/bin/bash
# Runs once, when the primary's data directory is first initialised: the official image's
# entrypoint executes it from /docker-entrypoint-initdb.d while its temporary server is up.
# Creates the replication role and lets it connect for streaming replication with its password.
#
# PGDATA                     the data directory;  PGHOST/PGPORT/PGUSER/PGDATABASE: the local server
# REPLICATION_USER           role replicas connect as
# REPLICATION_PASSWORD_FILE  the file holding its password (the credentials Secret's); psql reads
#                            it itself, so the password is on no command line
set -euo pipefail
: "${PGDATA:?}" "${REPLICATION_USER:?}" "${REPLICATION_PASSWORD_FILE:?}"
[ -s "$REPLICATION_PASSWORD_FILE" ] || { echo "${0##*/}: $REPLICATION_PASSWORD_FILE is empty or missing" >&2; exit 1; }

psql -X -q -v ON_ERROR_STOP=1 -v user="$REPLICATION_USER" -v file="$REPLICATION_PASSWORD_FILE" <<'SQL'
\set password `cat :'file'`
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user')
\gexec
SQL
# `host all all all` (the image's own entry) does not cover replication connections
printf 'host replication %s all scram-sha-256\n' "$REPLICATION_USER" >>"$PGDATA/pg_hba.conf"
psql -X -q -v ON_ERROR_STOP=1 -c 'SELECT pg_reload_conf()' >/dev/null
printf '%s: replication role %s ready\n' "${0##*/}" "$REPLICATION_USER" >&2
