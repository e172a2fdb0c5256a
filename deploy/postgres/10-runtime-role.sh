#!/bin/sh
# Runs once, when the database volume is first initialised (docker-entrypoint-initdb.d): the role the
# server runs as. It owns nothing; 'apikeys db grant apikeys_runtime' (compose's migrate service) gives
# it exactly what the server needs.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v password="$APIKEYS_RUNTIME_PASSWORD" <<'SQL'
CREATE ROLE apikeys_runtime LOGIN PASSWORD :'password';
SQL
