#!/bin/sh
# As the official image's: arguments that start with `-` are the server's.
set -eu
case ${1:-} in -*) set -- memcached "$@" ;; esac
[ $# -gt 0 ] || set -- memcached
exec "$@"
