#!/bin/sh
# Creates and migrates Temporal's two PostgreSQL databases (persistence and visibility).
#
# Runs in temporalio/admin-tools before the server starts. Every step is idempotent, so the job
# also runs on every `up`: on an existing cluster it is a no-op, and after both image tags are
# bumped it applies the new schema versions before the new server starts.
#   - `create` ignores a database that already exists;
#   - `setup-schema -v 0.0` only writes the version tables and leaves a newer version untouched;
#   - `update-schema` applies the versioned migrations above the recorded version.
set -eu

POSTGRES_SEEDS="${POSTGRES_SEEDS:-postgresql}"
DB_PORT="${DB_PORT:-5432}"
POSTGRES_USER="${POSTGRES_USER:-temporal}"
DBNAME="${DBNAME:-temporal}"
VISIBILITY_DBNAME="${VISIBILITY_DBNAME:-temporal_visibility}"
SCHEMA_ROOT=/etc/temporal/schema/postgresql/v12

# temporal-sql-tool reads the password from SQL_PASSWORD: it stays out of the process list.
SQL_PASSWORD="${SQL_PASSWORD:-${POSTGRES_PWD:-}}"
export SQL_PASSWORD

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" \
    -u "$POSTGRES_USER" "$@"
}

migrate() {
  db="$1"
  schema_dir="$2"
  echo "setup-postgres: database '$db' on $POSTGRES_SEEDS:$DB_PORT"
  sql_tool --db "$db" create
  sql_tool --db "$db" setup-schema -v 0.0
  sql_tool --db "$db" update-schema -d "$schema_dir"
}

migrate "$DBNAME" "$SCHEMA_ROOT/temporal/versioned"
migrate "$VISIBILITY_DBNAME" "$SCHEMA_ROOT/visibility/versioned"
echo "setup-postgres: schema up to date"
