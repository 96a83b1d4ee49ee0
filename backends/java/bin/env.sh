# Shared by bin/stacklab-java, bin/test and setup.sh: where the runtime's classes and jars are.
# shellcheck shell=bash
here=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd)
java_home_jars=${STACKLAB_JAVA_JARS:-/usr/share/java}
build=${STACKLAB_JAVA_BUILD:-$here/build}
classpath() {
    grep -v '^#' "$here/$1" | sed '/^$/d' | sed "s|^|$java_home_jars/|" | paste -sd:
}
