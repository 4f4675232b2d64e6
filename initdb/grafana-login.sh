#!/bin/sh
# Grafana's login: role `grafana` (GRAFANA_DB_USER), password GRAFANA_DB_PASSWORD, holding
# nothing but grafana_reader's SELECT (initdb/007_grafana_reader.sql). The postgres image runs
# this once, after the .sql files, on a new volume; on an existing one run it yourself:
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/grafana-login.sh
# Running it again sets the password anew.
set -eu
: "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD}"
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v login="${GRAFANA_DB_USER:-grafana}" -v password="$GRAFANA_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'login')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'login', :'password') \gexec
SELECT format('GRANT grafana_reader TO %I', :'login') \gexec
SQL
