#!/usr/bin/env bash
# Start Debian's PostgreSQL cluster on 127.0.0.1 and make sure a role and database for nbgrader exist.
# Idempotent: an already running cluster is reused. Prints the gradebook URL (nbgrader's CourseDirectory.db_url).
#
#   .ci/postgres.sh            # -> postgresql://nbgrader:nbgrader@127.0.0.1:5432/nbgrader
#
# Needs root (or sudo) and the Debian package `postgresql` (which creates the cluster "main").
# The role has CREATEDB so tests can make a throw-away database per run. The defaults are the gradebook URL of
# deploy/grader_nbgrader_config.py (a deployment that changes them copies the printed URL there).
set -euo pipefail
ROLE="${RNNKIT_PG_ROLE:-nbgrader}"
PASSWORD="${RNNKIT_PG_PASSWORD:-nbgrader}"
DB="${RNNKIT_PG_DB:-nbgrader}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    echo "postgres.sh: Debian's postgresql is not installed (apt-get install postgresql)" >&2
    exit 1
fi
read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters --no-header | head -n 1) || true
if [ -z "${VERSION:-}" ]; then
    VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    CLUSTER=main
    $SUDO pg_createcluster "$VERSION" "$CLUSTER" >/dev/null
    read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters --no-header | head -n 1)
fi
if [ "$STATUS" != "online" ]; then
    $SUDO pg_ctlcluster "$VERSION" "$CLUSTER" start -o "-c listen_addresses=127.0.0.1"
fi
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || { echo "postgres.sh: PostgreSQL did not come up on 127.0.0.1:$PORT" >&2; exit 1; }

if [ -n "$SUDO" ]; then psql_admin() { sudo -u postgres psql -v ON_ERROR_STOP=1 -q -p "$PORT" "$@"; }
else psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -p "$PORT" "$@"; }; fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
    psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE $DB OWNER $ROLE"
fi
echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
