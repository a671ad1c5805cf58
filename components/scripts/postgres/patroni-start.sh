#!/bin/sh
# Entrypoint of a group member: Patroni with the kit's configuration and the passwords from their files.
#
# Copies the configuration (PATRONI_CONFIG_DIR, from the ConfigMap) into PATRONI_RUN_DIR (an
# in-memory volume), adds 90-passwords.yml (mode 0600) from SUPERUSER_PASSWORD_FILE and
# REPLICATION_PASSWORD_FILE, and execs `patroni` on that directory: no password is in an
# environment variable or on a command line; `patronictl -c $PATRONI_RUN_DIR` reads the same files.
# The member is POD_NAME; other members reach it at POD_NAME.MEMBERS_HOST (the group's headless
# Service), unless PATRONI_POSTGRESQL_CONNECT_ADDRESS / PATRONI_RESTAPI_CONNECT_ADDRESS are given.
set -eu
. "$(dirname "$0")/lib.sh"

: "${POD_NAME:?}" "${MEMBERS_HOST:?}"
: "${PATRONI_CONFIG_DIR:=/etc/patroni}" "${PATRONI_RUN_DIR:=/run/patroni}" "${PGPORT:=5432}" "${PATRONI_API_PORT:=8008}"

# quoted NAME FILE: the file's first line as a YAML single-quoted scalar
quoted() {
    [ -r "$2" ] || die "$1: cannot read $2"
    IFS= read -r value <"$2" || [ -n "$value" ] || die "$1: $2 is empty"
    [ -n "$value" ] || die "$1: $2 is empty"
    printf "'%s'" "$(printf '%s' "$value" | sed "s/'/''/g")"
}

superuser=$(quoted SUPERUSER_PASSWORD_FILE "${SUPERUSER_PASSWORD_FILE:?}")
replication=$(quoted REPLICATION_PASSWORD_FILE "${REPLICATION_PASSWORD_FILE:?}")

umask 077
rm -f "$PATRONI_RUN_DIR"/*.yml
cp "$PATRONI_CONFIG_DIR"/*.yml "$PATRONI_RUN_DIR"/
cat >"$PATRONI_RUN_DIR/90-passwords.yml" <<YAML
postgresql:
  authentication:
    superuser:
      password: $superuser
    replication:
      password: $replication
YAML

export PATRONI_NAME="$POD_NAME"
export PATRONI_POSTGRESQL_CONNECT_ADDRESS="${PATRONI_POSTGRESQL_CONNECT_ADDRESS:-$POD_NAME.$MEMBERS_HOST:$PGPORT}"
export PATRONI_RESTAPI_CONNECT_ADDRESS="${PATRONI_RESTAPI_CONNECT_ADDRESS:-$POD_NAME.$MEMBERS_HOST:$PATRONI_API_PORT}"
log "starting Patroni as $POD_NAME, reached at $PATRONI_POSTGRESQL_CONNECT_ADDRESS"
exec patroni "$PATRONI_RUN_DIR"
