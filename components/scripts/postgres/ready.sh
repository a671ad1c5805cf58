#!/bin/bash
# Readiness probe of a single server (phases 1-2): ready when it accepts writes (not in recovery).
# A group's members are Patroni's, which answers on its REST API (/readiness).
#
# PGHOST/PGPORT/PGUSER/PGDATABASE: the local server.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(query 'SELECT pg_is_in_recovery()')" = f ] || die "in recovery: not accepting writes"
