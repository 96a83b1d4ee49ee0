#!/bin/sh
# Makes the data directory at first start (system tables; the database and the user of
# MYSQL_* or MARIADB_*, created by the server itself from an init file), then runs the server
# in the foreground.
set -eu
case ${1:-mariadbd} in -*) set -- mariadbd "$@" ;; esac
[ $# -gt 0 ] || set -- mariadbd
case $1 in mariadbd | mysqld) shift ;; *) exec "$@" ;; esac

cnf=/etc/mysql/stacklab.cnf
user=${MARIADB_USER:-${MYSQL_USER:-}}
pass=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
db=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
# A value in an SQL string literal: backslashes and quotes escaped.
lit() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }
# shellcheck disable=SC2016 # backquotes, not an expansion
ident() { printf '%s' "$1" | sed 's/`/``/g'; }

if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --defaults-file="$cnf" --skip-test-db \
        --auth-root-authentication-method=socket >/tmp/install-db.log 2>&1 \
        || { cat /tmp/install-db.log >&2; exit 1; }
    init=$(mktemp)
    {
        # No anonymous accounts; no proxy grant naming the build host (it would only warn).
        echo "DELETE FROM mysql.global_priv WHERE User = '';"
        echo "DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';"
        [ -z "$db" ] || echo "CREATE DATABASE IF NOT EXISTS \`$(ident "$db")\`;"
        if [ -n "$user" ]; then
            [ -n "$pass" ] || { echo "MYSQL_PASSWORD must be set with MYSQL_USER" >&2; exit 1; }
            echo "CREATE USER '$(lit "$user")'@'%' IDENTIFIED BY '$(lit "$pass")';"
            [ -z "$db" ] || echo "GRANT ALL ON \`$(ident "$db")\`.* TO '$(lit "$user")'@'%';"
        fi
        echo "FLUSH PRIVILEGES;"
    } >"$init"
    set -- --init-file="$init" "$@"
fi
unset MARIADB_PASSWORD MYSQL_PASSWORD
exec mariadbd --defaults-file="$cnf" "$@"
