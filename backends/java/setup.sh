#!/usr/bin/env bash
# Makes the Java runtime ready to start: the Debian packages of ./debian-packages that are
# missing are installed (apt-get, as root or with password-less sudo), then the sources are
# compiled with javac against the jars those packages put in /usr/share/java (classpath.txt)
# into build/ — again only when a source changed since the last build — and the runtime's own
# --check loads every library.
#
#   backends/java/setup.sh
#
# Where Maven Central is reachable, `mvn package` (in this folder) is the usual alternative:
# pom.xml names the same libraries. Here no Maven repository is reachable, so javac it is.
set -euo pipefail
source "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/bin/env.sh"

missing=()
while read -r pkg; do
    [[ -z $pkg || $pkg == \#* ]] && continue
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done <"$here/debian-packages"

if ((${#missing[@]})); then
    sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "setup.sh: not root and no password-less sudo to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "setup.sh: installing ${missing[*]}" >&2
    apt_opts=(-o DPkg::Lock::Timeout=900)
    "${sudo[@]}" apt-get "${apt_opts[@]}" update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

# One build at a time (scripts/test and a developer's shell may both run this).
mkdir -p "$build"
exec 9>"$build/.lock"
flock 9

# The stamp is a hash of every source and of the jar lists: unchanged means nothing to do.
stamp=$(cd "$here" && find src classpath.txt test-classpath.txt -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [[ $(cat "$build/.stamp" 2>/dev/null || true) != "$stamp" ]]; then
    rm -rf "$build/classes" "$build/test-classes"
    cp=$(classpath classpath.txt)
    javac_opts=(--release 17 -encoding UTF-8 -Xlint:all,-serial,-processing,-path -nowarn)
    mapfile -t main_sources < <(find "$here/src/main/java" -name '*.java' | sort)
    javac "${javac_opts[@]}" -d "$build/classes" -cp "$cp" "${main_sources[@]}" 2>&1 | grep -v 'internal proprietary API\|sun\.misc\|^ *\^\|^[0-9]* warnings\?$' >&2 || true
    [[ -f $build/classes/stacklab/Main.class ]] || { echo "setup.sh: javac failed" >&2; exit 1; }
    mapfile -t test_sources < <(find "$here/src/test/java" -name '*.java' | sort)
    if ((${#test_sources[@]})); then
        javac "${javac_opts[@]}" -d "$build/test-classes" -cp "$build/classes:$cp:$(classpath test-classpath.txt)" "${test_sources[@]}" >&2
    fi
    echo "$stamp" >"$build/.stamp"
fi
"$here/bin/stacklab-java" --check >/dev/null
