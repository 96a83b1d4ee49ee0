#!/usr/bin/env bash
# Makes the Node runtime's modules and native addon, in a cache folder, again only when this
# folder's inputs changed:
#
#   backends/node/setup.sh          # into ${STACKLAB_NODE_CACHE:-~/.cache/stacklab-node}
#   backends/node/setup.sh --check  # exit 0 when the cache is up to date, else say so (makes nothing)
#
# No npm registry is reached (this machine has none). The modules are Debian's node-* packages
# (debian-packages.txt and their node-*/libjs-* dependencies), fetched with `apt-get download`
# and unpacked with `dpkg-deb -x` into $cache/modules: they are pure JavaScript and run on any
# Node from 18 on, the machine's own included, which Debian's nodejs package would conflict
# with. Two native pieces:
#   - node-sqlite3's addon is Node-API (ABI-stable) but Debian links it against libnode.so.108
#     (Debian's Node 18); $cache/lib holds an empty stand-in of that name, so the addon's
#     Node-API calls resolve to the running node, whichever version it is.
#   - native/passwords.c (bcrypt over libcrypt, argon2id over libargon2) is compiled here with
#     cc against the running node's headers, into $cache/native/passwords.node.
# Needs: apt-get (with its lists), dpkg-deb, cc, libargon2-dev and libcrypt-dev, node >= 18 with
# its headers (include/node next to the binary). With npm instead: `npm ci` (package.json).
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
cache=${STACKLAB_NODE_CACHE:-$HOME/.cache/stacklab-node}
node=${STACKLAB_NODE:-node}

say() { echo "setup.sh: $*" >&2; }

if ! "$node" -e 'process.exit(+process.versions.node.split(".")[0] < 18 ? 1 : 0)' 2>/dev/null; then
    say "$node is missing or older than 18; install Node.js 18+ (Debian: apt-get install nodejs)"
    exit 1
fi
node_bin=$(command -v "$node")
node_prefix=$(cd -- "$(dirname -- "$(readlink -f -- "$node_bin")")/.." && pwd)
headers=
for d in "$node_prefix/include/node" /usr/include/node /usr/include/nodejs/src; do
    [[ -f $d/node_api.h ]] && { headers=$d; break; }
done
if [[ -z $headers ]]; then
    say "no node_api.h for $node_bin (looked in $node_prefix/include/node and /usr/include/node); Debian: apt-get install libnode-dev"
    exit 1
fi

want=$( (cat "$here/debian-packages.txt" "$here/native/passwords.c"; "$node" -p 'process.versions.napi'; echo "$headers") | sha256sum)
if [[ $want == "$(cat "$cache/.inputs.sha256" 2>/dev/null || true)" ]]; then
    exit 0
fi
if [[ ${1:-} == --check ]]; then
    echo "the Node runtime's modules at $cache are missing or not those of backends/node; run backends/node/setup.sh" >&2
    exit 1
fi
say "making the Node runtime's modules in $cache"
rm -f -- "$cache/.inputs.sha256"
mkdir -p -- "$cache"
work=$(mktemp -d "$cache/.work.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# The Debian packages: the listed ones and every node-*/libjs-* package they need.
mapfile -t top < <(grep -v '^\s*#' "$here/debian-packages.txt" | grep -v '^\s*$')
list() {
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "${top[@]}" 2>/dev/null |
        grep -v '^[ <]' | grep -E '^(node-|libjs-)' | sort -u
}
mapfile -t pkgs < <(list)
if ((${#pkgs[@]} < ${#top[@]})); then
    say "apt has no lists for ${top[*]}: running apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
    mapfile -t pkgs < <(list)
fi
if ((${#pkgs[@]} < ${#top[@]})); then
    say "apt-cache does not know ${top[*]}; is this Debian 12 with its main archive?"
    exit 1
fi
(cd "$work" && apt-get download -qq "${pkgs[@]}" >&2 2>"$work/download.log") || {
    cat "$work/download.log" >&2
    say "apt-get download failed"
    exit 1
}
mkdir -p "$work/modules"
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/modules"
done
rm -f -- "$work"/*.deb

# The stand-in for Debian's libnode.so.108 that node-sqlite3's addon names.
mkdir -p "$work/lib"
echo '/* empty: the Node-API symbols come from the running node */' >"$work/lib/empty.c"
cc -shared -fPIC -Wl,-soname,libnode.so.108 -o "$work/lib/libnode.so.108" "$work/lib/empty.c"

mkdir -p "$work/native"
cc -O2 -Wall -Wextra -shared -fPIC -DNODE_GYP_MODULE_NAME=passwords -I"$headers" \
    -o "$work/native/passwords.node" "$here/native/passwords.c" -lcrypt -largon2 || {
    say "could not compile native/passwords.c (Debian: apt-get install gcc libargon2-dev libcrypt-dev)"
    exit 1
}

rm -rf -- "$cache/modules" "$cache/lib" "$cache/native"
mv "$work/modules" "$work/lib" "$work/native" "$cache/"
echo "$want" >"$cache/.inputs.sha256"
say "done"
