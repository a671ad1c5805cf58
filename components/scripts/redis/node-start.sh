#!/bin/sh
# shellcheck shell=dash
# Start redis-server from the kit's rendered redis.conf (REDIS_CONFIG), in the foreground.
#
# The password (the file REDIS_PASSWORD_FILE, from the Secret) is written as `requirepass` and
# `masterauth` to a file only this user can read, in REDIS_RUN_DIR (an in-memory volume), and
# included after redis.conf: it is never in a ConfigMap, an environment nor on a command line.
# Arguments are redis.conf overrides for this pod, e.g. `--cluster-announce-hostname NAME`
# in Kubernetes, or `--bind 127.0.0.5 --port 7000 --dir DIR` on loopback in the tests.
set -eu
: "${REDIS_CONFIG:?path of the rendered redis.conf}"
: "${REDIS_RUN_DIR:?writable directory for the password file}"
: "${REDIS_PASSWORD_FILE:?file holding the password the server requires}"

password=$(cat "$REDIS_PASSWORD_FILE")
[ -n "$password" ] || { echo "node-start.sh: $REDIS_PASSWORD_FILE is empty" >&2; exit 1; }
quoted=$(printf '%s' "$password" | sed 's/[\\"]/\\&/g')
umask 077
printf 'requirepass "%s"\nmasterauth "%s"\n' "$quoted" "$quoted" >"$REDIS_RUN_DIR/auth.conf"
exec redis-server "$REDIS_CONFIG" "$@" --include "$REDIS_RUN_DIR/auth.conf"
