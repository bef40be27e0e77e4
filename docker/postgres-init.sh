#!/bin/sh
# Runs once, when the PostgreSQL volume is empty: the login faceseal's service uses. faceseal
# init (with the administrator URL) then creates its NOLOGIN roles and schema and grants this
# login the application role.
set -eu
password=$(cat /run/secrets/faceseal_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=pw="$password" <<'SQL'
CREATE ROLE faceseal_svc LOGIN PASSWORD :'pw';
SQL
