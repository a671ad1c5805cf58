#!/bin/bash
# Promote this replica to a writable primary (step 3 of the procedure in docs/postgres.md).
# Ends recovery, waits for it to finish, then proves the server accepts writes by assigning a
# transaction id (impossible during recovery). Running it on a primary changes nothing.
#
# PGHOST/PGPORT/PGUSER/PGDATABASE: the local server; PROMOTE_TIMEOUT: seconds to wait (default 60)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if [ "$(query 'SELECT pg_is_in_recovery()')" = f ]; then
    log "not in recovery: already a primary"
else
    [ "$(query "SELECT pg_promote(true, ${PROMOTE_TIMEOUT:-60})")" = t ] ||
        die "recovery did not end within ${PROMOTE_TIMEOUT:-60}s"
fi
xid=$(query 'SELECT pg_current_xact_id()')
log "primary: accepting writes (assigned transaction $xid)"
