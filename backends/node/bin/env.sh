# Sourced by bin/stacklab-node and bin/test: where the modules and the addon are. With
# node_modules/ in this folder (`npm ci`) those are used; else what setup.sh made in
# ${STACKLAB_NODE_CACHE:-~/.cache/stacklab-node}; or the system's (STACKLAB_NODE_MODULES=system).
here=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd)
cache=${STACKLAB_NODE_CACHE:-$HOME/.cache/stacklab-node}
node=${STACKLAB_NODE:-node}
# STACKLAB_NODE_MODULES=system: the modules are the system's own (Debian's node-* packages
# installed with their nodejs, as in config/images/node), and STACKLAB_NODE_ADDON names the addon.
if [[ ${STACKLAB_NODE_MODULES:-} == system ]]; then
    :
elif [[ ! -d $here/node_modules ]]; then
    if [[ ! -f $cache/.inputs.sha256 ]]; then
        echo "the Node runtime's modules are missing at $cache; run backends/node/setup.sh" >&2
        exit 1
    fi
    triplet=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
    export NODE_PATH=$cache/modules/usr/lib/$triplet/nodejs:$cache/modules/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
    # node-sqlite3's addon names Debian's libnode.so.108; setup.sh put an empty stand-in here
    # (absent in the image, whose Node is Debian's own and has the real one).
    if [[ -d $cache/lib ]]; then
        export LD_LIBRARY_PATH=$cache/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    fi
    export STACKLAB_NODE_ADDON=${STACKLAB_NODE_ADDON:-$cache/native/passwords.node}
fi
# Hashes, SQLite and file reads share libuv's pool: enough threads that a full hashing gate
# (2 x cores) leaves room for the databases.
export UV_THREADPOOL_SIZE=${UV_THREADPOOL_SIZE:-16}
