#!/usr/bin/env bash
# Makes the Ruby runtime ready to start: the Debian packages of ./debian-packages that are
# missing are installed (apt-get, as root or with password-less sudo), then Bundler checks that
# every gem of Gemfile.lock is installed (`bundle check`: local only, no registry) and the
# runtime's own --check loads it.
#
#   backends/ruby/setup.sh
#
# Where a gem registry is reachable, `bundle install` (in this folder) is the usual alternative
# to the Debian packages: Gemfile.lock names the same gems and versions.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)

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
    apt_opts=(-o DPkg::Lock::Timeout=600)
    "${sudo[@]}" apt-get "${apt_opts[@]}" update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

export BUNDLE_GEMFILE=$here/Gemfile BUNDLE_FROZEN=true BUNDLE_APP_CONFIG=${BUNDLE_APP_CONFIG:-$here/.bundle}
if ! out=$(bundle check 2>&1); then
    echo "$out" >&2
    echo "setup.sh: the gems of backends/ruby/Gemfile.lock are not all installed" >&2
    exit 1
fi
"$here/bin/stacklab-ruby" --check >/dev/null
