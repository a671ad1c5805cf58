#!/bin/bash
# Init container of the PgBouncer pods: writes PgBouncer's auth_file from the credentials Secret
# (passed in through the environment), so no password is ever stored in a ConfigMap.
#
# POOLER_USER, POOLER_PASSWORD  the role clients log in as and its password
# AUTH_FILE                     where to write it (an in-memory volume in the pod)
set -euo pipefail
: "${POOLER_USER:?}" "${POOLER_PASSWORD:?}" "${AUTH_FILE:?}"

# userlist.txt syntax: "name" "password", a double quote inside written twice
quote() { printf '"%s"' "${1//\"/\"\"}"; }
umask 077
printf '%s %s\n' "$(quote "$POOLER_USER")" "$(quote "$POOLER_PASSWORD")" >"$AUTH_FILE"
