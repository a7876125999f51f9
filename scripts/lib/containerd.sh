# shellcheck shell=bash
#
# Private containerd for tests and demos. Source this file, then:
#
#   ctd_start [DIR]   start a containerd whose root, state, sockets and log all
#                     live under DIR (default: a new mktemp -d folder under /tmp),
#                     wait until it answers, export CONTAINERD_ADDRESS, CTD_DIR
#                     and CTD_VERSION (containerd's version, e.g. 1.6.20 or
#                     2.1.9), and install an EXIT trap that calls ctd_stop.
#   ctd_stop          kill every task and container it holds, stop containerd,
#                     kill leftover shims, unmount everything under DIR and
#                     remove DIR. Safe to call more than once.
#   ctd_ctr ARGS...   run ctr against the private containerd.
#
# Environment:
#   CONTAINERD_BIN    containerd binary to run (default: containerd from PATH);
#                     1.6, 1.7 and 2.x are supported (config version 2 for 1.x,
#                     3 for 2.x). If its folder is not in PATH (e.g. a copy from
#                     scripts/fetch-containerd), it is put in containerd's PATH
#                     right after SHIM_DIR, so that the containerd-shim-runc-v2
#                     beside it is the one used.
#   CTR_BIN           ctr binary (default: ctr from PATH); use the ctr of the
#                     same release as CONTAINERD_BIN
#   SHIM_DIR          folder put first in containerd's PATH so that it finds
#                     containerd-shim-wasmtime-v1 (default: <repo>/target/release)
#   CTD_LOG_LEVEL     containerd log level (default: info; e.g. debug)
#   CTD_ENABLE_CRI    set to 1 to keep the CRI plugin (default: disabled, the
#                     ctr-only suites do not need it)
#
# It never touches a system-wide containerd: nothing it starts or removes lives
# outside DIR, except what containerd itself and its shims put under
# /run/containerd (shim sockets, runc state), which they remove themselves.

CTD_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

ctd_log() { printf '[containerd.sh] %s\n' "$*" >&2; }

ctd_ctr() {
    "${CTR_BIN:-ctr}" --address "${CONTAINERD_ADDRESS:?ctd_start first}" "$@"
}

# ctd_start [DIR]
# shellcheck disable=SC2120
ctd_start() {
    local dir="${1:-}"
    if [[ -n "${CTD_PID:-}" ]] && kill -0 "$CTD_PID" 2>/dev/null; then
        ctd_log "a private containerd is already running (pid $CTD_PID, dir $CTD_DIR)"
        return 1
    fi
    if [[ -z "$dir" ]]; then
        dir="$(mktemp -d /tmp/ctd.XXXXXX)"
    else
        mkdir -p "$dir"
        dir="$(cd "$dir" && pwd)"
    fi
    local sock="$dir/containerd.sock"
    if (( ${#sock} > 100 )); then
        ctd_log "socket path $sock is too long for a unix socket; use a shorter DIR"
        return 1
    fi

    local bin="${CONTAINERD_BIN:-containerd}"
    local bin_path
    if ! bin_path="$(command -v "$bin")"; then
        ctd_log "containerd binary '$bin' not found (install it with scripts/install-deps or set CONTAINERD_BIN)"
        return 1
    fi
    local shim_dir="${SHIM_DIR:-$CTD_REPO_ROOT/target/release}"
    if [[ -d "$shim_dir" ]]; then
        shim_dir="$(cd "$shim_dir" && pwd)"
    fi
    if [[ ! -x "$shim_dir/containerd-shim-wasmtime-v1" ]]; then
        ctd_log "note: $shim_dir/containerd-shim-wasmtime-v1 does not exist (yet); wasm runs will fail until it is built"
    fi

    # "containerd github.com/containerd/containerd[/v2] 1.7.24~ds1 <revision>"
    local version
    version="$("$bin_path" --version 2>/dev/null | awk '{print $3}')"
    version="${version#v}"
    version="${version%%[~+-]*}"
    if [[ ! "$version" =~ ^[0-9]+\.[0-9]+ ]]; then
        ctd_log "cannot tell the version of $bin_path from: $("$bin_path" --version 2>&1)"
        return 1
    fi
    local major="${version%%.*}"
    local bin_dir path_extra=""
    bin_dir="$(dirname "$bin_path")"
    if [[ ":$PATH:" != *":$bin_dir:"* ]]; then
        path_extra="$bin_dir:"
    fi

    local level="${CTD_LOG_LEVEL:-info}"
    # containerd 2.x splits CRI into three plugins (and reads config version 3).
    local cri='"io.containerd.grpc.v1.cri"' config_version=2
    if ((major >= 2)); then
        cri='"io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"'
        config_version=3
    fi
    local disabled="disabled_plugins = [$cri]"
    if [[ "${CTD_ENABLE_CRI:-0}" == 1 ]]; then
        disabled='disabled_plugins = []'
    fi
    # NRI (1.7 and later; on by default in 2.x) would listen on the global
    # /var/run/nri/nri.sock.
    local nri=""
    if [[ "$version" != 1.[0-6].* ]]; then
        nri='  [plugins."io.containerd.nri.v1.nri"]
    disable = true'
    fi
    mkdir -p "$dir/root" "$dir/state" "$dir/opt" "$dir/fifo"
    cat >"$dir/config.toml" <<TOML
version = $config_version
root = "$dir/root"
state = "$dir/state"
$disabled

[grpc]
  address = "$sock"

[ttrpc]
  address = "$dir/containerd-ttrpc.sock"

[debug]
  address = "$dir/debug.sock"
  level = "$level"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
$nri
TOML

    ctd_log "starting $bin_path ($("$bin_path" --version 2>/dev/null | awk '{print $3}'), config version $config_version)"
    ctd_log "  dir:      $dir"
    ctd_log "  socket:   $sock"
    ctd_log "  shim dir: $shim_dir (first in containerd's PATH)"
    ctd_log "  log:      $dir/containerd.log"
    PATH="$shim_dir:$path_extra$PATH" "$bin_path" --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/containerd.pid"

    export CTD_DIR="$dir" CTD_PID="$pid" CONTAINERD_ADDRESS="$sock" CTD_VERSION="$version"
    # Stop it whatever way the caller's shell ends; chain an EXIT trap already set.
    local prev
    prev="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"
    if [[ "$prev" != *ctd_stop* ]]; then
        # shellcheck disable=SC2064
        trap "ctd_stop; ${prev:-:}" EXIT
    fi
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local deadline=$((SECONDS + 20))
    until "${CTR_BIN:-ctr}" --address "$sock" version >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            ctd_log "containerd exited during start-up; its log:"
            cat "$dir/containerd.log" >&2
            ctd_stop
            return 1
        fi
        if (( SECONDS >= deadline )); then
            ctd_log "containerd did not answer within 20s; its log:"
            cat "$dir/containerd.log" >&2
            ctd_stop
            return 1
        fi
        sleep 0.2
    done
    ctd_log "containerd is up (pid $pid); CONTAINERD_ADDRESS=$sock CTD_DIR=$dir"
}

# Parent pid of $1 (empty if gone); the comm field may contain spaces.
ctd__ppid() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"
    local -a f
    read -r -a f <<<"$stat"
    echo "${f[1]:-}"
}

# All pids whose command line mentions $1, and all their descendants, except
# this shell and its ancestors.
ctd__pids_mentioning() {
    local needle="$1" p cmd pp
    local -A keep=() found=() parent=()
    p=$BASHPID
    while [[ -n "$p" && "$p" != 0 ]]; do
        keep[$p]=1
        p="$(ctd__ppid "$p")"
    done
    keep[$$]=1
    for p in /proc/[0-9]*; do
        p="${p#/proc/}"
        [[ -n "${keep[$p]:-}" ]] && continue
        pp="$(ctd__ppid "$p")"
        [[ -n "$pp" ]] && parent[$p]=$pp
        cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")"
        if [[ "$cmd" == *"$needle"* ]]; then
            found[$p]=1
        fi
    done
    # Add descendants (e.g. container processes of a killed shim).
    local changed=1
    while ((changed)); do
        changed=0
        for p in "${!parent[@]}"; do
            if [[ -z "${found[$p]:-}" && -n "${found[${parent[$p]}]:-}" ]]; then
                found[$p]=1
                changed=1
            fi
        done
    done
    echo "${!found[@]}"
}

ctd_stop() {
    local dir="${CTD_DIR:-}"
    local pid="${CTD_PID:-}"
    [[ -n "$dir" ]] || return 0
    # Errors must not abort a caller running under set -e.
    local errexit=0
    [[ $- == *e* ]] && errexit=1
    set +e

    local sock="$dir/containerd.sock"
    # Namespaces seen, for removing the empty per-namespace folders that ctr
    # run and the runc shim create outside DIR (cgroups, runc state roots).
    CTD__NAMESPACES=()
    ctd_log "stopping private containerd in $dir"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        local c=( "${CTR_BIN:-ctr}" --address "$sock" ) ns t
        for ns in $(timeout 10 "${c[@]}" namespaces ls -q 2>/dev/null); do
            for t in $(timeout 10 "${c[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
                timeout 10 "${c[@]}" -n "$ns" tasks kill -s KILL "$t" >/dev/null 2>&1
            done
            for t in $(timeout 10 "${c[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
                timeout 15 "${c[@]}" -n "$ns" tasks rm -f "$t" >/dev/null 2>&1
            done
            for t in $(timeout 10 "${c[@]}" -n "$ns" containers ls -q 2>/dev/null); do
                timeout 15 "${c[@]}" -n "$ns" containers rm "$t" >/dev/null 2>&1
            done
            CTD__NAMESPACES+=("$ns")
        done
        kill -TERM "$pid" 2>/dev/null
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            ctd_log "containerd did not stop within 10s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    fi

    # Shims (and what they started) that outlived containerd: their command
    # line carries -address DIR/containerd.sock.
    local left
    left="$(ctd__pids_mentioning "$dir")"
    if [[ -n "$left" ]]; then
        ctd_log "killing leftover processes: $left"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
        sleep 0.2
    fi

    # What is left outside DIR by tasks whose shim died with them (containerd
    # was gone or did not answer): their bundles still say which they were.
    local bundle ns_dir ns id
    local -A namespaces=()
    for ns_dir in "$dir"/state/io.containerd.runtime.v2.task/*/; do
        [[ -d "$ns_dir" ]] || continue
        ns="$(basename "$ns_dir")"
        namespaces[$ns]=1
        for bundle in "$ns_dir"*/; do
            [[ -d "$bundle" ]] || continue
            id="$(basename "$bundle")"
            # Empty cgroups ctr run asked for (cgroup v1 and v2).
            rmdir /sys/fs/cgroup/*/"$ns/$id" /sys/fs/cgroup/"$ns/$id" 2>/dev/null
            # runc's state for it, if it is this containerd's container.
            if grep -qF "$dir/" "/run/containerd/runc/$ns/$id/state.json" 2>/dev/null; then
                rm -rf "/run/containerd/runc/$ns/$id"
            fi
            # The shim's socket: /run/containerd/s/sha256(<address>/<ns>/<id>).
            local sock_path
            sock_path="/run/containerd/s/$(printf '%s' "$sock/$ns/$id" | sha256sum | cut -d' ' -f1)"
            [[ -S "$sock_path" ]] && rm -f "$sock_path"
        done
    done
    for ns in "${!namespaces[@]}" "${CTD__NAMESPACES[@]}"; do
        rmdir /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns" "/run/containerd/runc/$ns" 2>/dev/null
    done

    # Unmount whatever is still mounted under DIR, innermost (latest) first.
    local _ m mounts
    for _ in 1 2 3; do
        mounts="$(awk -v d="$dir" '{ mp = $5; gsub(/\\040/, " ", mp); if (mp == d || index(mp, d "/") == 1) print mp }' /proc/self/mountinfo | tac)"
        [[ -z "$mounts" ]] && break
        while IFS= read -r m; do
            [[ -z "$m" ]] && continue
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || ctd_log "could not unmount $m"
        done <<<"$mounts"
    done

    rm -rf "$dir" || ctd_log "could not remove $dir"
    unset CTD_DIR CTD_PID CONTAINERD_ADDRESS CTD_VERSION
    ctd_log "stopped"
    ((errexit)) && set -e
    return 0
}
