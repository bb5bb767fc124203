#!/usr/bin/env bash
# Creates one database per aidlink service (gateway, donations, dispatch, community), owned by
# POSTGRES_USER. The postgres image runs this from /docker-entrypoint-initdb.d on
# the first start of an empty data volume only; `aidlink migrate` then creates the
# tables. Safe to run again: existing databases are left alone.
#
# No `set -u` and no `exit`: if the file loses its executable bit the entrypoint
# sources it instead of running it, and both would leak into the entrypoint.
set -eo pipefail

for db in gateway donations dispatch community; do
    # psql quotes the names itself (%I, :'var'); \gexec runs the CREATE only
    # when the SELECT returns a row, i.e. when the database is missing.
    psql -v ON_ERROR_STOP=1 \
        --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
        -v db="$db" -v owner="$POSTGRES_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')
\gexec
SQL
done
