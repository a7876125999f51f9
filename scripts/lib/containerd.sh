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
#   ctd_restart       stop the private containerd (SIGTERM, as a service
#                     manager would; its shims and containers keep running)
#                     and start it again with the same configuration, e.g. to
#                     check that running containers survive a restart. Needs
#                     only CTD_DIR (it can run in another process than
#                     ctd_start's); the new pid goes to CTD_DIR/containerd.pid.
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
#   WASM_SHIM_PROFILE_DIR  the shims' sandbox profile folder (default: DIR/profiles,
#                     seeded with runtimeclass/profiles/*.toml); exported, and
#                     given to containerd (so to the shims) also by ctd_restart
#   CTD_LOG_LEVEL     containerd log level (default: info; e.g. debug)
#   CTD_ENABLE_CRI    set to 1 to enable and configure the CRI plugin (default:
#                     disabled, the ctr-only suites do not need it). See "CRI"
#                     below.
#   CTD_SANDBOXER     on containerd 2.x, who holds a Wasm pod's sandbox: "shim"
#                     (default: `sandboxer = "shim"` on the wasmtime and wasmedge
#                     runtimes, so their pods have no pause container) or
#                     "podsandbox" (containerd's pause container, as on 1.x)
#   CTD_SANDBOX_IMAGE pause image of CRI pods (default localhost/test/pause:latest)
#   CTD_SANDBOX_TAR   OCI tarball of it, imported into the k8s.io namespace at
#                     start when it exists (default <repo>/test-images/out/pause.tar)
#   CTD_CNI_BIN_DIR   CNI plugins (default /usr/lib/cni: Debian's
#                     containernetworking-plugins)
#   CTD_CNI_PREFIX    prefix length of the pod subnet, 16 to 24 (default 24: a
#                     /24, addresses .10 to .250, about 240 pods). A shorter one
#                     (e.g. 20: a /20, 16 /24s, about 4000 addresses) is for
#                     density runs (scripts/bench-density); its range runs from
#                     .10 of its first /24 to .250 of its last. A Linux bridge
#                     takes at most 1024 ports (BR_MAX_PORTS), one veth per
#                     pod, so 1000 pods at a time fit on the one bridge, not
#                     many more, whatever the subnet.
#
# CRI (CTD_ENABLE_CRI=1): containerd 1.x gets `io.containerd.grpc.v1.cri`
# (config version 2), 2.x `io.containerd.cri.v1.runtime` (runtimes, CNI),
# `io.containerd.cri.v1.images` (the pinned sandbox image) and
# `io.containerd.grpc.v1.cri` (streaming server), config version 3. Runtime
# handlers: runc (io.containerd.runc.v2, cgroupfs), wasmtime
# (io.containerd.wasmtime.v1) and wasmedge (io.containerd.wasmedge.v1), and
# <engine>-strict / <engine>-moderate whose options name the sandbox profiles
# edge-strict / edge-moderate of WASM_SHIM_PROFILE_DIR.
# `restrict_oom_score_adj = true`, since root here lacks CAP_SYS_RESOURCE.
# The pod network is private to this containerd: a CNI bridge + host-local
# network (bridge, network name, subnet (a /24 unless CTD_CNI_PREFIX) and IPAM data dir of its own,
# no iptables rules), its conf dir under DIR. ctd_start also exports
#   CTD_CNI_NETWORK   network name (also the host-local folder's name)
#   CTD_CNI_BRIDGE    bridge interface name
#   CTD_CNI_SUBNET    e.g. 10.201.17.0/24 (10.201.16.0/20 with CTD_CNI_PREFIX=20)
#   CTD_CNI_DATA_DIR  host-local's lease folder (DIR/cni/ipam)
#   CTD_CGROUP_PARENT a cgroup (e.g. /ctd-1a2b3c4d) under which pods should put
#                     their cgroup_parent; ctd_stop removes it
#   CTD_SANDBOX_IMAGE
# ctd_stop then also removes what CRI and CNI leave behind when pods were not
# removed through CRI: the pods' network namespaces (those holding an address
# of the subnet), veths on the bridge, the bridge, libcni's cached results of
# the network, the cgroup parent, and restores net.ipv4.ip_forward (the
# bridge plugin turns it on for the gateway) to its value before ctd_start.
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
    # The shims' sandbox profiles: a folder private to this containerd, seeded
    # with runtimeclass/profiles (the CRI runtimes <engine>-strict and
    # <engine>-moderate name two of them), unless WASM_SHIM_PROFILE_DIR says.
    if [[ -z "${WASM_SHIM_PROFILE_DIR:-}" ]]; then
        export WASM_SHIM_PROFILE_DIR="$dir/profiles"
        mkdir -p "$WASM_SHIM_PROFILE_DIR"
        cp "$CTD_REPO_ROOT"/runtimeclass/profiles/*.toml "$WASM_SHIM_PROFILE_DIR/"
    fi
    local cri_config=""
    if [[ "${CTD_ENABLE_CRI:-0}" == 1 ]]; then
        cri_config="$(ctd__cri_setup "$dir" "$version")" || return 1
        # ctd__cri_setup ran in a subshell: its exports are recomputed here.
        ctd__cri_names "$dir"
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
$cri_config
TOML

    ctd_log "starting $bin_path ($("$bin_path" --version 2>/dev/null | awk '{print $3}'), config version $config_version)"
    ctd_log "  dir:      $dir"
    ctd_log "  socket:   $sock"
    ctd_log "  shim dir: $shim_dir (first in containerd's PATH)"
    ctd_log "  log:      $dir/containerd.log"
    # What ctd_restart needs to start it again.
    printf '%s\n%s\n%s\n' "$bin_path" "$shim_dir:$path_extra$PATH" "$WASM_SHIM_PROFILE_DIR" >"$dir/containerd.cmd"
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
    if [[ "${CTD_ENABLE_CRI:-0}" == 1 ]]; then
        local tar="${CTD_SANDBOX_TAR:-$CTD_REPO_ROOT/test-images/out/pause.tar}"
        if [[ -f "$tar" ]]; then
            if ! ctd_ctr -n k8s.io image import "$tar" >/dev/null; then
                ctd_log "importing the sandbox image $tar into k8s.io failed"
                ctd_stop
                return 1
            fi
            ctd_log "CRI: sandbox image $CTD_SANDBOX_IMAGE imported from $tar"
        else
            ctd_log "CRI: $tar does not exist; import $CTD_SANDBOX_IMAGE into k8s.io before running pods"
        fi
        ctd_log "CRI: network $CTD_CNI_NETWORK, bridge $CTD_CNI_BRIDGE, subnet $CTD_CNI_SUBNET, cgroup parent $CTD_CGROUP_PARENT"
    fi
}

# ctd__cri_names DIR: the names of this containerd's pod network and cgroup
# parent, derived from DIR (so ctd_stop finds them again), exported.
ctd__cri_names() {
    local h
    h="$(printf '%s' "$1" | sha256sum | cut -c1-8)"
    export CTD_CNI_NETWORK="ctd-$h" CTD_CNI_BRIDGE="ctdbr$h" \
        CTD_CNI_DATA_DIR="$1/cni/ipam" CTD_CGROUP_PARENT="/ctd-$h" \
        CTD_SANDBOX_IMAGE="${CTD_SANDBOX_IMAGE:-localhost/test/pause:latest}"
    if [[ -f "$1/cni/subnet" ]]; then
        CTD_CNI_SUBNET="$(cat "$1/cni/subnet")"
        export CTD_CNI_SUBNET
    fi
}

# ctd__cri_setup DIR VERSION: writes the CNI configuration under DIR, records
# net.ipv4.ip_forward, and prints the CRI part of containerd's config.
ctd__cri_setup() {
    local dir="$1" version="$2"
    local major="${version%%.*}" minor="${version#*.}"
    minor="${minor%%.*}"
    local bin_dir="${CTD_CNI_BIN_DIR:-/usr/lib/cni}"
    if [[ ! -x "$bin_dir/bridge" || ! -x "$bin_dir/host-local" || ! -x "$bin_dir/loopback" ]]; then
        ctd_log "CNI plugins bridge, host-local and loopback not found in $bin_dir (apt-get install containernetworking-plugins, or set CTD_CNI_BIN_DIR)"
        return 1
    fi
    ctd__cri_names "$dir"
    local plen="${CTD_CNI_PREFIX:-24}"
    if [[ ! "$plen" =~ ^[0-9]+$ ]] || ((plen < 16 || plen > 24)); then
        ctd_log "CTD_CNI_PREFIX must be a prefix length from 16 to 24 (got '$plen')"
        return 1
    fi
    # A /PLEN (a /24 by default) of 10.200.0.0/13 none of whose /24s a route of
    # this host covers yet, picked from DIR's hash so that concurrent private
    # containerds do not collide; a shorter prefix is aligned to its size.
    local blocks=$((1 << (24 - plen)))
    local h n i j subnet="" routes free
    h="$(printf '%s' "$dir" | sha256sum | cut -c1-4)"
    routes="$(ip -4 route show 2>/dev/null)"
    for ((i = 0; i < 64; i++)); do
        n=$(((0x$h + i * 97) % 2048 / blocks * blocks))
        free=1
        for ((j = n; j < n + blocks; j++)); do
            if grep -qF "10.$((200 + j / 256)).$((j % 256))." <<<"$routes"; then
                free=0
                break
            fi
        done
        if ((free)); then
            subnet="10.$((200 + n / 256)).$((n % 256)).0/$plen"
            break
        fi
    done
    if [[ -z "$subnet" ]]; then
        ctd_log "no free /$plen in 10.200.0.0/13 for the pod network"
        return 1
    fi
    # First and last /24 of the subnet: the gateway and the range's start are in
    # the first, the range's end in the last (the same /24 for a /24).
    local prefix="10.$((200 + n / 256)).$((n % 256))"
    local last="10.$((200 + (n + blocks - 1) / 256)).$(((n + blocks - 1) % 256))"
    mkdir -p "$dir/cni/net.d" "$dir/cni/ipam"
    echo "$subnet" >"$dir/cni/subnet"
    cat /proc/sys/net/ipv4/ip_forward >"$dir/cni/ip_forward" 2>/dev/null
    cat >"$dir/cni/net.d/10-$CTD_CNI_NETWORK.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$CTD_CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CTD_CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{ "subnet": "$subnet", "rangeStart": "$prefix.10", "rangeEnd": "$last.250", "gateway": "$prefix.1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
JSON
    local image="$CTD_SANDBOX_IMAGE"
    local runtimes cri
    if ((major >= 2)); then
        cri="plugins.'io.containerd.cri.v1.runtime'"
    else
        cri='plugins."io.containerd.grpc.v1.cri"'
    fi
    # containerd 2.x: the shims hold their pods' sandboxes themselves (Sandbox API), so a
    # Wasm pod has no pause container. Not for the profile runtimes below: 2.1 cannot
    # hand a runtime with an options table to a shim-held pod's task (containerd PR 12986).
    local sandboxer=""
    if ((major >= 2)) && [[ "${CTD_SANDBOXER:-shim}" == shim ]]; then
        sandboxer="
      sandboxer = \"shim\""
    fi
    runtimes="  [$cri.containerd]
    default_runtime_name = \"runc\"
    [$cri.containerd.runtimes.runc]
      runtime_type = \"io.containerd.runc.v2\"
      [$cri.containerd.runtimes.runc.options]
        SystemdCgroup = false
    [$cri.containerd.runtimes.wasmtime]
      runtime_type = \"io.containerd.wasmtime.v1\"$sandboxer
      pod_annotations = [\"wasm-shim/*\"]
      container_annotations = [\"wasm-shim/*\"]
    [$cri.containerd.runtimes.wasmedge]
      runtime_type = \"io.containerd.wasmedge.v1\"$sandboxer
      pod_annotations = [\"wasm-shim/*\"]
      container_annotations = [\"wasm-shim/*\"]"
    # A RuntimeClass per engine and sandbox profile: the options name the file.
    local engine profile
    for engine in wasmtime wasmedge; do
        for profile in strict moderate; do
            runtimes+="
    [$cri.containerd.runtimes.$engine-$profile]
      runtime_type = \"io.containerd.$engine.v1\"
      pod_annotations = [\"wasm-shim/*\"]
      container_annotations = [\"wasm-shim/*\"]
      [$cri.containerd.runtimes.$engine-$profile.options]
        ConfigPath = \"$WASM_SHIM_PROFILE_DIR/edge-$profile.toml\""
        done
    done
    if ((major >= 2)); then
        local bins="bin_dirs = [\"$bin_dir\"]"
        ((minor < 1)) && bins="bin_dir = \"$bin_dir\""
        cat <<TOML
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$image"
  [$cri]
    restrict_oom_score_adj = true
    enable_selinux = false
$runtimes
  [$cri.cni]
    $bins
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_tls_streaming = false
TOML
    else
        cat <<TOML
  [$cri]
    sandbox_image = "$image"
    restrict_oom_score_adj = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_tls_streaming = false
$runtimes
  [$cri.cni]
    bin_dir = "$bin_dir"
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1
TOML
    fi
}

# ctd__cri_cleanup DIR: after containerd stopped, removes what pods of its CRI
# plugin left outside DIR (see the header).
ctd__cri_cleanup() {
    local dir="$1"
    [[ -f "$dir/cni/subnet" ]] || return 0
    ctd__cri_names "$dir"
    local ns patterns
    # " inet 10.a.b." for each /24 of the subnet (one for a /24).
    patterns="$(ctd__subnet_24s "$CTD_CNI_SUBNET" | sed 's/^/ inet /')"
    # Network namespaces of its pods: those with an address of the subnet.
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        if ip -n "$ns" -4 -o addr show 2>/dev/null | grep -qF -- "$patterns"; then
            ctd_log "removing network namespace $ns of a pod"
            ip netns delete "$ns" 2>/dev/null || ctd_log "could not remove network namespace $ns"
        fi
    done
    local link
    for link in $(ip -o link show master "$CTD_CNI_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}'); do
        link="${link%%@*}"
        ip link delete "$link" 2>/dev/null
    done
    if ip link show "$CTD_CNI_BRIDGE" >/dev/null 2>&1; then
        ip link delete "$CTD_CNI_BRIDGE" 2>/dev/null || ctd_log "could not remove bridge $CTD_CNI_BRIDGE"
    fi
    rm -f /var/lib/cni/results/"$CTD_CNI_NETWORK"-* 2>/dev/null
    # containerd sets up the pods' loopback as the network "cni-loopback",
    # cached per sandbox id; its sandboxes are folders under its root.
    local sb
    for sb in "$dir"/root/*/sandboxes/*/; do
        [[ -d "$sb" ]] || continue
        rm -f "/var/lib/cni/results/cni-loopback-$(basename "$sb")-lo"
    done
    # The pod cgroups (CRI leaves the pod-level parent; kubelet would remove
    # it), deepest first, in every hierarchy.
    local cg
    for cg in /sys/fs/cgroup"$CTD_CGROUP_PARENT" /sys/fs/cgroup/*"$CTD_CGROUP_PARENT"; do
        [[ -d "$cg" ]] || continue
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ -d "$cg" ]] && ctd_log "could not remove cgroup $cg (processes still in it?)"
    done
    if [[ -f "$dir/cni/ip_forward" ]]; then
        local before
        before="$(cat "$dir/cni/ip_forward")"
        if [[ "$before" =~ ^[01]$ && "$(cat /proc/sys/net/ipv4/ip_forward)" != "$before" ]]; then
            echo "$before" >/proc/sys/net/ipv4/ip_forward || ctd_log "could not restore net.ipv4.ip_forward to $before"
        fi
    fi
    unset CTD_CNI_NETWORK CTD_CNI_BRIDGE CTD_CNI_SUBNET CTD_CNI_DATA_DIR CTD_CGROUP_PARENT
}

# ctd__subnet_24s A.B.C.D/PLEN: "A.B.C." of each /24 in the subnet (PLEN 16 to 24), one a line.
ctd__subnet_24s() {
    local net="${1%/*}" plen="${1#*/}" a b c _ k
    IFS=. read -r a b c _ <<<"$net"
    [[ "$plen" =~ ^[0-9]+$ ]] && ((plen >= 16 && plen <= 24)) || plen=24
    for ((k = 0; k < (1 << (24 - plen)); k++)); do
        echo "$a.$b.$((c + k))."
    done
}

ctd_restart() {
    local dir="${CTD_DIR:?ctd_start first}"
    local pid bin path profiles
    pid="$(cat "$dir/containerd.pid" 2>/dev/null)"
    { read -r bin && read -r path && read -r profiles; } <"$dir/containerd.cmd" || {
        ctd_log "cannot read $dir/containerd.cmd (written by ctd_start)"
        return 1
    }
    ctd_log "restarting containerd (pid $pid)"
    if [[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null; then
        if ! ctd__wait_gone "$pid"; then
            ctd_log "containerd did not stop within 10s"
            return 1
        fi
    fi
    # setsid: the new containerd does not belong to the caller's process
    # group or session (a test runner) and outlives it.
    WASM_SHIM_PROFILE_DIR="$profiles" PATH="$path" setsid "$bin" --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/containerd.pid"
    if [[ "${CTD_DIR:-}" == "$dir" ]]; then
        export CTD_PID="$pid"
    fi
    local deadline=$((SECONDS + 20))
    until "${CTR_BIN:-ctr}" --address "$dir/containerd.sock" version >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
            ctd_log "containerd did not come back; the end of its log:"
            tail -n 30 "$dir/containerd.log" >&2
            return 1
        fi
        sleep 0.2
    done
    ctd_log "containerd is up again (pid $pid)"
}

# ctd__wait_gone PID: waits up to 10 s for PID to exit; fails if it is still there.
ctd__wait_gone() {
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$1" 2>/dev/null
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

    # ctd_restart (maybe in another process) started a new containerd.
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        pid="$(cat "$dir/containerd.pid" 2>/dev/null)"
    fi
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
        if ! ctd__wait_gone "$pid"; then
            ctd_log "containerd did not stop within 10s; SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    fi

    # Shims (and what they started) that outlived containerd: their command
    # line carries -address DIR/containerd.sock. A Wasm shim serves the node's
    # pods and exits 2 s after its last one: give it 4 s first.
    local left i
    for i in $(seq 40); do
        left="$(ctd__pids_mentioning "$dir")"
        [[ -z "$left" ]] && break
        sleep 0.1
    done
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

    ctd__cri_cleanup "$dir"

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
