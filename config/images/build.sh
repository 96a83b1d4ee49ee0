#!/usr/bin/env bash
# Builds the docker provisioner's engine images with no container registry at all:
#
#   1. a Debian root filesystem made by mmdebstrap from this machine's own apt sources
#      (/etc/apt/sources.list and /etc/apt/sources.list.d: the entries for the machine's own
#      Debian release; no host name is written into the repository), imported with
#      `docker import` as stacklab/debian:local;
#   2. one image per engine built FROM it with `docker build` (the Dockerfile beside this
#      script installs Debian's package; the host's network is used for apt, as the host
#      reaches its mirror and a container's bridge may not):
#        stacklab/postgres:local   PostgreSQL (Debian's default major)
#        stacklab/mariadb:local    MariaDB, for the `mysql` engine
#        stacklab/redis:local      Redis
#        stacklab/memcached:local  Memcached
#      and, when asked by name, stacklab/backend:local: this project's own `stacklab` binary
#      over the same base, for backend instances run as containers ([docker.backend]); and
#      stacklab/python:local: the Python runtime (backends/python) with its virtualenv baked
#      in: the host's pip downloads the wheels of requirements.txt (every one pinned with its
#      hash) for the image's Python, and the build installs them with no index; and
#      stacklab/node:local: the Node runtime (backends/node) on Debian's nodejs, with the
#      modules and addon backends/node/setup.sh makes on the host copied in; and
#      stacklab/ruby:local: the Ruby (Rails) runtime (backends/ruby) with Debian's packages of
#      the gems in its Gemfile.lock (backends/ruby/debian-packages); and
#      stacklab/java:local: the Java runtime (backends/java) on Debian's Java 17 runtime and
#      jars (backends/java/debian-packages), with the classes backends/java/setup.sh compiles
#      on the host copied in.
#      MongoDB is not in Debian (its licence keeps it out), so no local MongoDB image can be
#      made this way: the `mongodb` engine needs the official image from a registry.
#
# Each engine image takes the same environment and arguments as the official image it stands
# in for (POSTGRES_PASSWORD/_USER/_DB; MYSQL_USER/_PASSWORD/_DATABASE; the server's own
# arguments), so config/docker.toml and config/images/docker-local.toml differ only in image
# names. Every server runs as its own unprivileged user: containers need no capability.
#
# Usage:
#   config/images/build.sh [--force] [--binary PATH] [ENGINE...]
#     ENGINE   postgres, mariadb, redis, memcached (default: all four), backend, python, node, ruby,
#              java
#     --binary the `stacklab` binary the backend image carries (default: the release build,
#              made with `cargo build --release -p stacklab` when missing)
#     --force  rebuild images that exist already (else an image whose recipe, or runtime, is
#              unchanged since it was built is skipped: each carries a hash of it); the base too when
#              no ENGINE is named (it is always built when missing)
#   config/images/build.sh --check   exit 0 when every image exists, 1 otherwise (builds nothing)
#
# Needs root (or password-less sudo) for apt-get and mmdebstrap, and a reachable Docker engine.
# Prints the time each image took and the total.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE_TAG=stacklab/debian:local
ALL_ENGINES=(postgres mariadb redis memcached)
FORCE=0
CHECK=0
ENGINES=()
BINARY=""

while (($#)); do
    case $1 in
        --force) FORCE=1 ;;
        --check) CHECK=1 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        postgres | mariadb | redis | memcached | backend | python | node | ruby | java) ENGINES+=("$1") ;;
        --binary) shift; BINARY=${1:-} ;;
        *) echo "build.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
FORCE_BASE=$FORCE
if ((${#ENGINES[@]})); then
    FORCE_BASE=0
else
    ENGINES=("${ALL_ENGINES[@]}")
fi

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf '[%(%H:%M:%S)T] ERROR: %s\n' -1 "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

have docker || die "the docker client is not installed"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "the Docker engine cannot be reached (is dockerd running, may this user use it?)"

if ((CHECK)); then
    missing=0
    for tag in "$BASE_TAG" "${ENGINES[@]/#/stacklab/}"; do
        [[ $tag == *:* ]] || tag=$tag:local
        if image_exists "$tag"; then echo "present: $tag"; else echo "missing: $tag"; missing=1; fi
    done
    exit "$missing"
fi

SUDO=()
if ((EUID != 0)); then
    sudo -n true 2>/dev/null || die "needs root or password-less sudo (apt-get, mmdebstrap)"
    SUDO=(sudo -n)
fi

TOTAL_START=$EPOCHREALTIME
TIMES=() # "TAG SECONDS" per image built

# ---------------------------------------------------------------------------------------------
# The machine's own Debian sources, as a deb822 file for mmdebstrap
# ---------------------------------------------------------------------------------------------

# Prints a deb822 sources file holding the enabled `deb` entries of /etc/apt/sources.list and
# /etc/apt/sources.list.d/*.{list,sources} whose suite is the machine's release (CODENAME,
# CODENAME-updates, CODENAME-security, ...). Entries of other vendors' repositories are left
# out: their keys are not in the image.
machine_sources() {
    python3 - "$1" <<'PY'
import glob, os, re, sys
codename = sys.argv[1]
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
    + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
entries = []  # (uris, suites, components, signed_by)

def wanted(suite):
    return suite == codename or suite.startswith(codename + "-") or suite.startswith(codename + "/")

for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:
                    fields[key] += "\n" + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if not fields or fields.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in fields.get("types", "").split():
                continue
            suites = [s for s in fields.get("suites", "").split() if wanted(s)]
            if suites:
                entries.append((fields.get("uris", "").split(), suites,
                                fields.get("components", "main").split(),
                                fields.get("signed-by", "")))
    else:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)", line)
            if not m:
                continue
            opts, uri, suite, comps = m.groups()
            if not wanted(suite):
                continue
            signed = ""
            if opts:
                for o in opts.strip("[] \t").split():
                    k, _, v = o.partition("=")
                    if k == "signed-by":
                        signed = v
            entries.append(([uri], [suite], comps.split() or ["main"], signed))

if not entries:
    sys.exit(f"no apt source for {codename} found in /etc/apt/sources.list(.d)")
out = []
for uris, suites, comps, signed in entries:
    stanza = [f"Types: deb", f"URIs: {' '.join(uris)}", f"Suites: {' '.join(suites)}",
              f"Components: {' '.join(comps)}"]
    if signed and "\n" not in signed:
        stanza.append(f"Signed-By: {signed}")
    out.append("\n".join(stanza))
print("\n\n".join(out))
PY
}

# ---------------------------------------------------------------------------------------------
# The base: mmdebstrap -> docker import
# ---------------------------------------------------------------------------------------------
build_base() {
    local start=$EPOCHREALTIME codename work
    if image_exists "$BASE_TAG" && ((!FORCE_BASE)); then
        log "$BASE_TAG exists: skipped (--force with no engine named rebuilds it)"
        return 0
    fi
    if ! have mmdebstrap; then
        log "installing mmdebstrap"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
            install -y -qq --no-install-recommends mmdebstrap >/dev/null
    fi
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot tell this machine's Debian release (/etc/os-release)"
    work=$(mktemp -d "${TMPDIR:-/tmp}/stacklab-images.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf -- '$work'" RETURN
    machine_sources "$codename" >"$work/machine.sources"
    log "building $BASE_TAG: Debian $codename from $(grep -c '^URIs:' "$work/machine.sources") apt source(s) of this machine"

    # The `apt` variant (Essential packages and apt) and no documentation, manual pages or
    # translations, now or in the engine images installed on top (dpkg's and apt's options are
    # kept in the image). mmdebstrap removes apt's lists and caches at the end by itself.
    # shellcheck disable=SC2016 # "$1" is the hook's argument, expanded by mmdebstrap's shell
    "${SUDO[@]}" mmdebstrap --quiet --variant=apt --format=tar \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='APT::Install-Suggests "false"' \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log' \
        "$codename" "$work/rootfs.tar" "$work/machine.sources"
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "Debian $codename from this machine's apt sources (mmdebstrap --variant=apt)" \
        "$work/rootfs.tar" "$BASE_TAG" >/dev/null
    TIMES+=("$BASE_TAG $(elapsed "$start")")
    log "$BASE_TAG built in $(elapsed "$start") s ($(docker image inspect -f '{{.Size}}' "$BASE_TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# ---------------------------------------------------------------------------------------------
# The engines: docker build FROM the base
# ---------------------------------------------------------------------------------------------
# source_hash DIR: a short hash of every file under DIR (names and contents), the label an
# image carries so that it is rebuilt exactly when what it was built from changed.
source_hash() {
    (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

build_engine() {
    local engine=$1 tag=stacklab/$1:local start=$EPOCHREALTIME source have
    # Labelled with a hash of its recipe: a changed Dockerfile or entrypoint rebuilds it.
    source=$(source_hash "$HERE/$engine")
    have=$(docker image inspect -f '{{index .Config.Labels "org.stacklab.source"}}' "$tag" 2>/dev/null || true)
    if [[ $have == "$source" ]] && ((!FORCE)); then
        log "$tag is up to date with config/images/$engine: skipped (--force rebuilds it)"
        return 0
    fi
    log "building $tag"
    # The legacy builder: the engine here may have no BuildKit, and it needs nothing of it.
    # Its output (and its deprecation notice) is shown only when the build fails.
    local out cache=()
    out=$(mktemp)
    ((FORCE)) && cache=(--no-cache)
    if ! DOCKER_BUILDKIT=0 docker build --network host --force-rm "${cache[@]}" \
            --build-arg "BASE=$BASE_TAG" --label "org.stacklab.recipe=config/images/$engine" \
            --label "org.stacklab.source=$source" -t "$tag" "$HERE/$engine" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -f "$out"
        die "building $tag failed (the end of its output is above)"
    fi
    rm -f "$out"
    TIMES+=("$tag $(elapsed "$start")")
    log "$tag built in $(elapsed "$start") s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The backend image: a build context of the Dockerfile and the binary.
build_backend() {
    local start=$EPOCHREALTIME tag=stacklab/backend:local ctx root
    if image_exists "$tag" && ((!FORCE)); then
        log "$tag exists: skipped (--force rebuilds it, e.g. after a new build of stacklab)"
        return 0
    fi
    root=$(cd "$HERE/../.." && pwd)
    if [[ -z $BINARY ]]; then
        BINARY=${CARGO_TARGET_DIR:-$root/target}/release/stacklab
        if [[ ! -x $BINARY ]]; then
            log "building the release stacklab binary"
            (cd "$root" && cargo build --release --quiet -p stacklab) \
                || die "cargo build --release -p stacklab failed"
        fi
    fi
    [[ -x $BINARY ]] || die "no stacklab binary at $BINARY"
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/stacklab-backend.XXXXXX")
    cp "$HERE/backend/Dockerfile" "$ctx/" && cp "$BINARY" "$ctx/stacklab"
    log "building $tag from $BINARY"
    local out
    out=$(mktemp)
    if ! DOCKER_BUILDKIT=0 docker build --force-rm --build-arg "BASE=$BASE_TAG" \
            --label "org.stacklab.recipe=config/images/backend" -t "$tag" "$ctx" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -rf "$out" "$ctx"
        die "building $tag failed (the end of its output is above)"
    fi
    rm -rf "$out" "$ctx"
    TIMES+=("$tag $(elapsed "$start")")
    log "$tag built in $(elapsed "$start") s"
}

# The Python runtime's image: a build context of the Dockerfile and backends/python (the
# package, its scripts and requirements.txt; no bytecode, no tests).
build_python() {
    local start=$EPOCHREALTIME tag=stacklab/python:local ctx root out cache=() source have
    root=$(cd "$HERE/../.." && pwd)
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/stacklab-python.XXXXXX")
    cp "$HERE/python/Dockerfile" "$ctx/"
    mkdir "$ctx/python"
    (cd "$root/backends/python" && tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude=tests \
        bin stacklab_python requirements.txt setup.sh pyproject.toml runtime.toml) | tar -x -C "$ctx/python"
    # The image is labelled with a hash of what it was built from, so a change of
    # backends/python (or of the recipe) rebuilds it and an unchanged one is kept.
    source=$(source_hash "$ctx")
    have=$(docker image inspect -f '{{index .Config.Labels "org.stacklab.source"}}' "$tag" 2>/dev/null || true)
    if [[ $have == "$source" ]] && ((!FORCE)); then
        log "$tag is up to date with backends/python: skipped (--force rebuilds it)"
        rm -rf "$ctx"
        return 0
    fi
    # The wheels for the image's interpreter (Debian's python3 of this release, as the host's).
    local pyver
    pyver=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') \
        || die "the image's Python version is that of /usr/bin/python3, which is missing"
    log "downloading the Python runtime's wheels for Python $pyver"
    out=$(mktemp)
    if ! python3 -m pip download --quiet --disable-pip-version-check --no-input --require-hashes \
            --only-binary=:all: --python-version "$pyver" --implementation cp \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_34_x86_64 --platform linux_x86_64 \
            -d "$ctx/wheels" -r "$root/backends/python/requirements.txt" >"$out" 2>&1; then
        tail -n 20 "$out" >&2
        rm -rf "$out" "$ctx"
        die "pip could not download backends/python/requirements.txt"
    fi
    log "building $tag"
    ((FORCE)) && cache=(--no-cache)
    if ! DOCKER_BUILDKIT=0 docker build --network host --force-rm "${cache[@]}" \
            --build-arg "BASE=$BASE_TAG" --label "org.stacklab.recipe=config/images/python" \
            --label "org.stacklab.source=$source" \
            -t "$tag" "$ctx" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -rf "$out" "$ctx"
        die "building $tag failed (the end of its output is above)"
    fi
    rm -rf "$out" "$ctx"
    TIMES+=("$tag $(elapsed "$start")")
    log "$tag built in $(elapsed "$start") s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The Ruby runtime's image: the Dockerfile and backends/ruby (no tests), rebuilt when either
# changed (a label holds the hash of what it was built from).
build_ruby() {
    local start=$EPOCHREALTIME tag=stacklab/ruby:local ctx root out cache=() source have
    root=$(cd "$HERE/../.." && pwd)
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/stacklab-ruby.XXXXXX")
    cp "$HERE/ruby/Dockerfile" "$ctx/"
    mkdir "$ctx/ruby"
    (cd "$root/backends/ruby" && tar -c --exclude=test --exclude=.bundle \
        app bin config lib config.ru Gemfile Gemfile.lock debian-packages runtime.toml setup.sh) | tar -x -C "$ctx/ruby"
    source=$(source_hash "$ctx")
    have=$(docker image inspect -f '{{index .Config.Labels "org.stacklab.source"}}' "$tag" 2>/dev/null || true)
    if [[ $have == "$source" ]] && ((!FORCE)); then
        log "$tag is up to date with backends/ruby: skipped (--force rebuilds it)"
        rm -rf "$ctx"
        return 0
    fi
    log "building $tag"
    out=$(mktemp)
    ((FORCE)) && cache=(--no-cache)
    if ! DOCKER_BUILDKIT=0 docker build --network host --force-rm "${cache[@]}" \
            --build-arg "BASE=$BASE_TAG" --label "org.stacklab.recipe=config/images/ruby" \
            --label "org.stacklab.source=$source" \
            -t "$tag" "$ctx" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -rf "$out" "$ctx"
        die "building $tag failed (the end of its output is above)"
    fi
    rm -rf "$out" "$ctx"
    TIMES+=("$tag $(elapsed "$start")")
    log "$tag built in $(elapsed "$start") s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The Node runtime's image: a build context of the Dockerfile, backends/node (its sources and
# scripts; no tests) and what backends/node/setup.sh made on the host (the modules and the
# addon; not the libnode stand-in, which the image's own Node does not need).
build_node() {
    local start=$EPOCHREALTIME tag=stacklab/node:local ctx root out cache=() source have node_cache
    root=$(cd "$HERE/../.." && pwd)
    node_cache=${STACKLAB_NODE_CACHE:-$HOME/.cache/stacklab-node}
    "$root/backends/node/setup.sh" || die "backends/node/setup.sh could not make the Node runtime's modules"
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/stacklab-node.XXXXXX")
    cp "$HERE/node/Dockerfile" "$ctx/"
    mkdir "$ctx/node" "$ctx/cache"
    (cd "$root/backends/node" && tar -c bin src native debian-packages.txt package.json runtime.toml) |
        tar -x -C "$ctx/node"
    (cd "$node_cache" && tar -c modules native .inputs.sha256) | tar -x -C "$ctx/cache"
    # The inputs' hash stands for the modules (setup.sh remakes them only when it changes).
    source=$( (cd "$ctx" && find . -path ./cache/modules -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum) |
        sha256sum | cut -c1-16)
    have=$(docker image inspect -f '{{index .Config.Labels "org.stacklab.source"}}' "$tag" 2>/dev/null || true)
    if [[ $have == "$source" ]] && ((!FORCE)); then
        log "$tag is up to date with backends/node: skipped (--force rebuilds it)"
        rm -rf "$ctx"
        return 0
    fi
    log "building $tag"
    out=$(mktemp)
    ((FORCE)) && cache=(--no-cache)
    if ! DOCKER_BUILDKIT=0 docker build --network host --force-rm "${cache[@]}" \
            --build-arg "BASE=$BASE_TAG" --label "org.stacklab.recipe=config/images/node" \
            --label "org.stacklab.source=$source" \
            -t "$tag" "$ctx" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -rf "$out" "$ctx"
        die "building $tag failed (the end of its output is above)"
    fi
    rm -rf "$out" "$ctx"
    TIMES+=("$tag $(elapsed "$start")")
    log "$tag built in $(elapsed "$start") s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# The Java runtime's image: the Dockerfile, backends/java's scripts and jar lists (no sources,
# no tests) and the classes backends/java/setup.sh compiled on the host; rebuilt when any of it
# changed (a label holds the hash of what it was built from).
build_java() {
    local start=$EPOCHREALTIME tag=stacklab/java:local ctx root out cache=() source have
    root=$(cd "$HERE/../.." && pwd)
    "$root/backends/java/setup.sh" || die "backends/java/setup.sh could not build the Java runtime"
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/stacklab-java.XXXXXX")
    cp "$HERE/java/Dockerfile" "$ctx/"
    mkdir "$ctx/java"
    (cd "$root/backends/java" && tar -c bin build/classes classpath.txt debian-packages runtime.toml) | tar -x -C "$ctx/java"
    source=$(source_hash "$ctx")
    have=$(docker image inspect -f '{{index .Config.Labels "org.stacklab.source"}}' "$tag" 2>/dev/null || true)
    if [[ $have == "$source" ]] && ((!FORCE)); then
        log "$tag is up to date with backends/java: skipped (--force rebuilds it)"
        rm -rf "$ctx"
        return 0
    fi
    log "building $tag"
    out=$(mktemp)
    ((FORCE)) && cache=(--no-cache)
    if ! DOCKER_BUILDKIT=0 docker build --network host --force-rm "${cache[@]}" \
            --build-arg "BASE=$BASE_TAG" --label "org.stacklab.recipe=config/images/java" \
            --label "org.stacklab.source=$source" \
            -t "$tag" "$ctx" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -rf "$out" "$ctx"
        die "building $tag failed (the end of its output is above)"
    fi
    rm -rf "$out" "$ctx"
    TIMES+=("$tag $(elapsed "$start")")
    log "$tag built in $(elapsed "$start") s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

build_base
for engine in "${ENGINES[@]}"; do
    case $engine in
        backend) build_backend ;;
        python) build_python ;;
        node) build_node ;;
        ruby) build_ruby ;;
        java) build_java ;;
        *) build_engine "$engine" ;;
    esac
done

echo
log "done in $(elapsed "$TOTAL_START") s"
for t in "${TIMES[@]}"; do
    printf '  %-28s %8s s\n' "${t% *}" "${t##* }"
done
docker image ls --filter 'reference=stacklab/*' --format '  {{.Repository}}:{{.Tag}}  {{.Size}}'
