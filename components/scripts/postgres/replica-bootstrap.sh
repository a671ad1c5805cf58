#!/bin/bash
# Init container of each replica pod. With an empty data directory it clones the primary with
# pg_basebackup and configures streaming from it (standby.signal + primary_conninfo) through a
# physical replication slot named after the replica, created on the primary by the same call.
# With a cluster already there it does nothing: the server resumes streaming from its slot.
#
# Either way it first writes the replication password to PGPASSFILE, a libpq password file on
# the data volume (mode 0600, as libpq requires) that primary_conninfo names: the password is in
# no environment, and a changed Secret takes effect at the pod's next start.
#
# PGDATA                     the data directory
# PRIMARY_HOST, PRIMARY_PORT the primary (the postgres-rw Service in Kubernetes)
# REPLICATION_USER           role to connect as
# REPLICATION_PASSWORD_FILE  the file holding its password (the credentials Secret's)
# PGPASSFILE                 where to write libpq's password file (outside PGDATA, on its volume)
# REPLICA_NAME               this replica's name (the pod name); slot: the name with every - as _
# BOOTSTRAP_TIMEOUT          seconds to wait for the primary to accept connections (default 300)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
: "${PGDATA:?}" "${PRIMARY_HOST:?}" "${PRIMARY_PORT:?}" "${REPLICATION_USER:?}" "${REPLICA_NAME:?}"
: "${REPLICATION_PASSWORD_FILE:?}" "${PGPASSFILE:?}"

password=$(cat "$REPLICATION_PASSWORD_FILE")
[ -n "$password" ] || die "$REPLICATION_PASSWORD_FILE is empty"
# .pgpass syntax: host:port:database:user:password, a : or \ inside a field escaped with \
escape() { printf '%s' "$1" | sed 's/[\\:]/\\&/g'; }
umask 077
printf '*:*:*:%s:%s\n' "$(escape "$REPLICATION_USER")" "$(escape "$password")" >"$PGPASSFILE.new"
mv "$PGPASSFILE.new" "$PGPASSFILE"

if [ -s "$PGDATA/PG_VERSION" ]; then
    log "$PGDATA holds a cluster: streaming resumes from its slot"
    exit 0
fi
slot=$(printf '%s' "$REPLICA_NAME" | tr -c 'a-z0-9_' '_')
primary="host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER"
replication="$primary dbname=replication replication=true"

deadline=$((SECONDS + ${BOOTSTRAP_TIMEOUT:-300}))
until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
    [ "$SECONDS" -lt "$deadline" ] || die "primary $PRIMARY_HOST:$PRIMARY_PORT not accepting connections"
    sleep 1
done

# a slot left by an earlier replica of this name pins WAL for data that is about to be replaced
if [ "$(psql -X -A -t -q -d "$replication" -c "READ_REPLICATION_SLOT $slot" | cut -d'|' -f1)" = physical ]; then
    log "dropping stale slot $slot"
    psql -X -q -d "$replication" -c "DROP_REPLICATION_SLOT $slot"
fi
# files an interrupted earlier attempt left behind
if [ -d "$PGDATA" ]; then
    find "$PGDATA" -mindepth 1 -delete
fi
log "cloning $PRIMARY_HOST:$PRIMARY_PORT into $PGDATA through slot $slot"
pg_basebackup -d "$primary" -D "$PGDATA" -X stream -R -C -S "$slot" --checkpoint=fast -w
[ -s "$PGDATA/PG_VERSION" ] || die "pg_basebackup left no cluster in $PGDATA"
log "replica $REPLICA_NAME cloned; it streams once postgres starts"
