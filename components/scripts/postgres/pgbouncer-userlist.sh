#!/bin/bash
# Init container of the PgBouncer pods: writes PgBouncer's auth_file from the credentials Secret's
# password file, so no password is ever stored in a ConfigMap or passed in the environment.
#
# POOLER_USER           the role clients log in as
# POOLER_PASSWORD_FILE  the file holding its password
# AUTH_FILE             where to write the auth file (an in-memory volume in the pod)
set -euo pipefail
: "${POOLER_USER:?}" "${POOLER_PASSWORD_FILE:?}" "${AUTH_FILE:?}"
password=$(cat "$POOLER_PASSWORD_FILE")
[ -n "$password" ] || { echo "${0##*/}: $POOLER_PASSWORD_FILE is empty" >&2; exit 1; }

# userlist.txt syntax: "name" "password", a double quote inside written twice
quote() { printf '"%s"' "${1//\"/\"\"}"; }
umask 077
printf '%s %s\n' "$(quote "$POOLER_USER")" "$(quote "$password")" >"$AUTH_FILE"
