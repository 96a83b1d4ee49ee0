#!/bin/sh
# Makes the cluster at first start (the superuser POSTGRES_USER with POSTGRES_PASSWORD,
# password authentication for every TCP client, the database POSTGRES_DB), then runs the
# server in the foreground as PID 1's exec.
set -eu
case ${1:-postgres} in -*) set -- postgres "$@" ;; esac
[ $# -gt 0 ] || set -- postgres
if [ "$1" != postgres ]; then exec "$@"; fi

: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=scram-sha-256 --auth-host=scram-sha-256 --no-sync --no-instructions \
        >/tmp/initdb.log 2>&1 || { cat /tmp/initdb.log >&2; rm -f "$pwfile"; exit 1; }
    rm -f "$pwfile"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        printf 'CREATE DATABASE "%s" OWNER "%s"\n' "$(printf '%s' "$db" | sed 's/"/""/g')" \
            "$(printf '%s' "$user" | sed 's/"/""/g')" \
            | postgres --single -D "$PGDATA" -j postgres >/tmp/createdb.log 2>&1 \
            || { cat /tmp/createdb.log >&2; exit 1; }
    fi
fi
unset POSTGRES_PASSWORD
exec "$@" -c listen_addresses='*'
