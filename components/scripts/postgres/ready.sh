#!/bin/bash
# Readiness probe: ready.sh primary | replica
#
#   primary  ready when the server accepts writes (not in recovery).
#   replica  ready when in recovery, the WAL receiver is streaming from the primary, and replay
#            lag is within limits: WAL received but not yet replayed <= MAX_LAG_BYTES, and, while
#            such WAL waits, the last replayed transaction is at most MAX_LAG_SECONDS old.
#            A promoted replica (no longer in recovery) is ready: it is then a primary.
#
# PGHOST/PGPORT/PGUSER/PGDATABASE: the local server; MAX_LAG_BYTES, MAX_LAG_SECONDS: the limits.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

case ${1:-} in
primary)
    [ "$(query 'SELECT pg_is_in_recovery()')" = f ] || die "in recovery: not accepting writes"
    ;;
replica)
    : "${MAX_LAG_BYTES:?}" "${MAX_LAG_SECONDS:?}"
    IFS='|' read -r recovery receiver lag_bytes lag_seconds <<<"$(query "
        SELECT pg_is_in_recovery(),
               coalesce((SELECT status FROM pg_stat_wal_receiver), 'stopped'),
               coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint,
               CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
                    ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
               END::bigint")"
    [ "$recovery" = t ] || exit 0
    [ "$receiver" = streaming ] || die "WAL receiver is $receiver, not streaming"
    [ "$lag_bytes" -le "$MAX_LAG_BYTES" ] || die "replay lag $lag_bytes bytes > $MAX_LAG_BYTES"
    [ "$lag_seconds" -le "$MAX_LAG_SECONDS" ] || die "replay lag $lag_seconds s > $MAX_LAG_SECONDS"
    ;;
*)
    die "usage: ready.sh primary|replica"
    ;;
esac
