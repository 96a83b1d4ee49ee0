#!/bin/sh
# As the official image's: arguments that start with `-` or name a .conf file are the
# server's; anything else is run as given (e.g. `sh -c` writing a config file first).
set -eu
case ${1:-} in -* | *.conf) set -- redis-server "$@" ;; esac
exec "$@"
