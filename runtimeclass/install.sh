#!/usr/bin/env bash
# Node installer of the containerd Wasm shims: puts the shim binaries on
# containerd's PATH (and, for WasmEdge, libwasmedge beside them), the sandbox
# profiles in /etc/containerd-shim-wasm/profiles, adds their runtimes to
# containerd's CRI config (config version 2 for containerd 1.x, version 3 for
# 2.x) and restarts containerd if the config changed. Running it again
# changes nothing.
#
# Usage: install.sh [OPTIONS]
#
#   --root DIR             the node's root file system (default /; the
#                          DaemonSet mounts the host's / at /host). Every path
#                          below is inside it.
#   --bin-src DIR          folder holding containerd-shim-<engine>-v1
#                          (default: this script's folder)
#   --bin-dir DIR          where to install them (default /usr/local/bin; it
#                          must be on containerd's PATH)
#   --lib-src DIR          folder holding libwasmedge.so.0* for the WasmEdge
#                          shim (default: <bin-src>/lib if it holds them,
#                          else $WASMEDGE_DIR/lib if WASMEDGE_DIR is set)
#   --runtimes LIST        comma-separated engines to configure, of wasmtime
#                          and wasmedge (default: every shim in --bin-src)
#   --profiles-src DIR     folder holding sandbox profiles, *.toml (default:
#                          the profiles folder beside this script, if any)
#   --no-profiles          no profiles: no profile runtimes in the config
#                          (installed profile files are left in place)
#   --config FILE          containerd config (default /etc/containerd/config.toml)
#   --config-version 2|3   version of a config created from nothing (default:
#                          3 if `containerd --version` says 2.x, else 2)
#   --containerd BIN       containerd binary to ask for its version, run as
#                          given (default: containerd on the node's PATH,
#                          through chroot when --root is not /)
#   --restart-cmd CMD      how to restart containerd (default:
#                          `systemctl restart containerd` when systemd runs)
#   --no-restart           never restart containerd (say so instead)
#
# The config is edited as text: containerd's own file is read with Python's
# tomllib to learn its version and what it already defines, and the runtimes
# go into one block between two marker comments, appended at the end on the
# first run and rewritten in place on later runs. Nothing outside the block
# is changed; before a changed config is written, the original is copied to
# FILE.bak.<UTC time>. The result is parsed again and checked before it
# replaces the file (atomically), so a config whose layout does not allow the
# block (e.g. the runtimes defined as an inline table) is refused, untouched.
#
# libwasmedge (WasmEdge runtime only) goes where the WasmEdge shim's RUNPATH
# looks first, <bin-dir>/../lib/containerd-shim-wasm (by default
# /usr/local/lib/containerd-shim-wasm): the files libwasmedge.so.0* of
# --lib-src, symlinks kept as symlinks (libwasmedge.so.0 ->
# libwasmedge.so.0.1.1), each replaced by rename and only when it differs;
# older libwasmedge.so.0* there are removed. No ld.so.conf entry, no
# ldconfig, no LD_LIBRARY_PATH, and no other WasmEdge install is touched.
# libwasmedge itself needs libLLVM-16.so.1 (Debian/Ubuntu package
# libllvm16), libzstd.so.1 (libzstd1) and libz.so.1 (zlib1g) in a folder the
# node's dynamic linker searches (/lib, /usr/lib, their multiarch and lib64
# folders, and those listed in /etc/ld.so.conf); if one is missing, or no
# libwasmedge is found (to install, or installed before), nothing at all is
# installed.
#
# Each runtime table: runtime_type io.containerd.<engine>.v1 and
# pod_annotations ["wasm-shim/*"], without which CRI does not pass the
# shim's pod annotations (wasm-shim/net-listen, ...) into the container spec.
# containerd 1.x drops its built-in runc runtime as soon as the config names
# any runtime, and its CRI plugin then fails to load, so when the config does
# not define runc the block defines it too (runtime_type io.containerd.runc.v2).
#
# Sandbox profiles (a node operator's named WASI policy, read by the shim):
# each *.toml of --profiles-src is checked (valid TOML, only the keys the
# shim knows, with their types) before anything is installed, then copied to
# /etc/containerd-shim-wasm/profiles/ (mode 644; replaced by rename, only when
# it differs; a profile there that --profiles-src lacks is left alone and gets
# no runtime). For each engine E and each profile, the config gets a runtime
# E-SUFFIX like E's own, plus the options containerd sends the shim as
# runtimeoptions.v1.Options:
#   [plugins."<cri>".containerd.runtimes.E-SUFFIX.options]
#     ConfigPath = "/etc/containerd-shim-wasm/profiles/<file>"
# SUFFIX is the file name without .toml and without a leading "edge-":
# edge-strict.toml -> wasmtime-strict and wasmedge-strict; gpu.toml ->
# wasmtime-gpu. A file name must be lower-case letters, digits and '-' (a DNS
# label, as the RuntimeClass handler E-SUFFIX must be), and two files may not
# give the same SUFFIX. A changed profile needs no restart: the shim reads it
# when it creates a container.
#
# Exit status: 0 done (changed or not), 1 error, 2 usage, 3 a runtime of the
# same name is already configured differently outside the block (untouched).
set -euo pipefail

log() { printf '[wasm-shim-install] %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

root=/
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin_src="$script_dir"
bin_dir=/usr/local/bin
lib_src=""
runtimes=""
profiles_src=""
profiles=1
# Where the shim looks for profiles (its WASM_SHIM_PROFILE_DIR default).
PROFILE_DIR=/etc/containerd-shim-wasm/profiles
config=/etc/containerd/config.toml
config_version=""
containerd_bin=""
restart_cmd=""
restart=1

while (($#)); do
    case "$1" in
        --root | --bin-src | --bin-dir | --lib-src | --runtimes | --profiles-src | --config | --config-version | --containerd | --restart-cmd)
            (($# >= 2)) || {
                log "$1 needs a value"
                exit 2
            }
            case "$1" in
                --root) root="$2" ;;
                --bin-src) bin_src="$2" ;;
                --bin-dir) bin_dir="$2" ;;
                --lib-src) lib_src="$2" ;;
                --runtimes) runtimes="$2" ;;
                --profiles-src) profiles_src="$2" ;;
                --config) config="$2" ;;
                --config-version) config_version="$2" ;;
                --containerd) containerd_bin="$2" ;;
                --restart-cmd) restart_cmd="$2" ;;
            esac
            shift 2
            ;;
        --no-restart)
            restart=0
            shift
            ;;
        --no-profiles)
            profiles=0
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            log "unknown argument '$1' (--help lists the options)"
            exit 2
            ;;
    esac
done

[[ -d "$root" ]] || die "--root $root is not a folder"
root="$(cd "$root" && pwd)"
# in_root PATH: PATH (absolute, as the node sees it) from here.
in_root() {
    if [[ "$root" == / ]]; then
        printf '%s' "$1"
    else
        printf '%s%s' "$root" "$1"
    fi
}
[[ "$bin_dir" == /* && "$config" == /* ]] || die "--bin-dir and --config must be absolute paths (inside --root)"
case "$config_version" in
    "" | 2 | 3) ;;
    *)
        log "--config-version must be 2 or 3"
        exit 2
        ;;
esac

# The engines to configure.
declare -a engines=()
if [[ -n "$runtimes" ]]; then
    IFS=, read -r -a engines <<<"$runtimes"
else
    for e in wasmtime wasmedge; do
        [[ -f "$bin_src/containerd-shim-$e-v1" ]] && engines+=("$e")
    done
    ((${#engines[@]})) || die "no containerd-shim-wasmtime-v1 or containerd-shim-wasmedge-v1 in $bin_src (--bin-src)"
fi
for e in "${engines[@]}"; do
    case "$e" in
        wasmtime | wasmedge) ;;
        *)
            log "unknown runtime '$e' in --runtimes (known: wasmtime, wasmedge)"
            exit 2
            ;;
    esac
done

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: the config and the profiles are read with Python 3.11+ (tomllib)"

# The sandbox profiles: found and checked before anything is written.
# profile_specs: "SUFFIX:FILE" per profile, for the config editor.
declare -a profile_files=() profile_specs=()
if ((profiles)); then
    if [[ -n "$profiles_src" ]]; then
        [[ -d "$profiles_src" ]] || die "--profiles-src $profiles_src is not a folder"
    elif [[ -d "$script_dir/profiles" ]]; then
        profiles_src="$script_dir/profiles"
    fi
fi
if ((profiles)) && [[ -n "$profiles_src" ]]; then
    # A ConfigMap volume holds links (edge-strict.toml -> ..data/edge-strict.toml):
    # followed here and when copied.
    for f in "$profiles_src"/*.toml; do
        [[ -e "$f" || -L "$f" ]] || continue
        [[ -f "$f" ]] || die "$f is not a file (a dangling link?)"
        profile_files+=("$f")
    done
    if ((${#profile_files[@]} == 0)); then
        log "no *.toml in $profiles_src (--profiles-src): no profile runtimes"
    else
        specs_out="$("$PYTHON" - "${profile_files[@]}" <<'PY'
import ipaddress, os, re, sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        sys.exit("needs Python 3.11+ (tomllib) or the tomli module")

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# The longest runtime name, wasmedge-SUFFIX, must stay a DNS label (63).
MAX_SUFFIX = 63 - len("wasmedge-")


def is_int(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def str_list(v, ok):
    return isinstance(v, list) and all(isinstance(x, str) and ok(x) for x in v)


# As the shim parses them (crates/core/src/policy/profile/parse.rs, policy/network.rs).
def host_name(s):
    return len(s) <= 253 and all(
        l and len(l) <= 63 and not l.startswith("-") and not l.endswith("-") and re.fullmatch(r"[A-Za-z0-9-]+", l)
        for l in s.split("."))


def host_ok(entry):
    """One ADDR:PORTS, as in wasm-shim/net-connect: ADDR is *, a host name, an IP
    ([v6] too) or a CIDR; PORTS is *, N or N-M."""
    entry = entry.strip()
    addr, sep, ports = entry.rpartition(":")
    if "," in entry or not sep or not addr:
        return False
    if ports != "*":
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", ports)
        if not m or not int(m[1]) <= int(m[2] or m[1]) <= 65535:
            return False
    if addr == "*":
        return True
    ip, slash, prefix = addr.partition("/")
    ip = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        net = ipaddress.ip_address(ip)
    except ValueError:
        return not slash and host_name(addr)
    return not slash or (prefix.isdigit() and int(prefix) <= net.max_prefixlen)


def env_ok(name):
    """A name, or PREFIX* (a trailing * is the only pattern)."""
    bare = name[:-1] if name.endswith("*") else name
    return bool(name) and "*" not in bare and "=" not in bare


def guest_path_ok(path):
    """Absolute, without '..'."""
    return path.startswith("/") and ".." not in path.split("/")


# The keys the shim knows (it refuses any other): key -> (check, what it must be).
KEYS = {
    "max_memory_pages": (lambda v: is_int(v, 1, 65536), "an integer, 1 to 65536 (64 KiB pages)"),
    "execution_timeout_ms": (lambda v: is_int(v, 1, 2**63 - 1), "a positive integer (milliseconds)"),
    "allowed_hosts": (lambda v: str_list(v, host_ok), 'a list of "ADDR:PORTS" strings (ADDR = host name, IP, CIDR or *; PORTS = N, N-M or *)'),
    "allowed_listen": (lambda v: isinstance(v, list) and all(is_int(x, 1, 65535) for x in v), "a list of ports, 1 to 65535"),
    "allowed_env_vars": (lambda v: str_list(v, env_ok), "a list of variable names (a trailing * is a glob)"),
    "max_network_requests": (lambda v: is_int(v, 0, 2**63 - 1), "an integer, 0 or more"),
    "allowed_dirs": (None, "an array of tables [[allowed_dirs]]"),
}
DIR_KEYS = {
    "guest_path": (lambda v: isinstance(v, str) and guest_path_ok(v), "an absolute path without '..'"),
    "readonly": (lambda v: isinstance(v, bool), "true or false"),
}

errors, by_suffix, specs = [], {}, []
for path in sys.argv[1:]:
    name = os.path.basename(path)
    stem = name[: -len(".toml")]
    # The naming rule: edge-strict.toml -> strict; any other name stays whole.
    suffix = stem[len("edge-"):] if stem.startswith("edge-") else stem
    if not DNS_LABEL.fullmatch(stem) or not DNS_LABEL.fullmatch(suffix) or len(suffix) > MAX_SUFFIX:
        errors.append(f"{path}: a profile's file name must be lower-case letters, digits and '-' "
                      f"(a DNS label; at most {MAX_SUFFIX} characters without a leading edge-) and .toml")
        continue
    if suffix in by_suffix:
        errors.append(f"{path} and {by_suffix[suffix]} both give the runtimes <engine>-{suffix}; rename one")
        continue
    by_suffix[suffix] = path
    try:
        with open(path, "rb") as f:
            prof = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        errors.append(f"{path} is not valid TOML: {e}")
        continue
    for key, value in prof.items():
        if key not in KEYS:
            errors.append(f"{path}: unknown key {key!r} (the shim refuses it; known: {', '.join(KEYS)})")
            continue
        ok, what = KEYS[key]
        if key == "allowed_dirs":
            if not (isinstance(value, list) and all(isinstance(d, dict) for d in value)):
                errors.append(f"{path}: allowed_dirs must be {what}")
                continue
            for i, d in enumerate(value):
                if "guest_path" not in d:
                    errors.append(f"{path}: allowed_dirs[{i}] has no guest_path")
                for k, v in d.items():
                    if k not in DIR_KEYS:
                        errors.append(f"{path}: allowed_dirs[{i}]: unknown key {k!r} (known: {', '.join(DIR_KEYS)})")
                    elif not DIR_KEYS[k][0](v):
                        errors.append(f"{path}: allowed_dirs[{i}].{k} must be {DIR_KEYS[k][1]}, not {v!r}")
        elif not ok(value):
            errors.append(f"{path}: {key} must be {what}, not {value!r}")
    specs.append(f"{suffix}:{name}")

for e in errors:
    print(e, file=sys.stderr)
if errors:
    sys.exit(1)
print("\n".join(specs))
PY
        )" || die "sandbox profiles of $profiles_src refused; nothing was installed"
        mapfile -t profile_specs <<<"$specs_out"
        ((${#profile_specs[@]} == ${#profile_files[@]})) || die "internal: the profile check answered '$specs_out'"
    fi
fi

# 0. libwasmedge, for the WasmEdge shim: found and checked before anything is
#    written, so a node that cannot run it is left untouched.
LWE_GLOB='libwasmedge.so.0*'
# The WasmEdge shim's RUNPATH is $ORIGIN/../lib/containerd-shim-wasm.
bin_parent="$(dirname "$bin_dir")"
[[ "$bin_parent" != / ]] || bin_parent=""
lib_dir="$bin_parent/lib/containerd-shim-wasm"
lib_dest="$(in_root "$lib_dir")"

# has_lwe DIR: whether DIR holds libwasmedge.so.0 (file, or link to one).
has_lwe() { [[ -f "$1/libwasmedge.so.0" ]]; }

# node_file PATH: whether PATH (as the node sees it) is a file, following
# symlinks inside the node's root (an absolute link target is the node's).
node_file() {
    local p="$1" t i
    for ((i = 0; i < 16; i++)); do
        if [[ -L "$(in_root "$p")" ]]; then
            t="$(readlink "$(in_root "$p")")"
            [[ "$t" == /* ]] || t="$(dirname "$p")/$t"
            p="$t"
        else
            [[ -f "$(in_root "$p")" ]]
            return
        fi
    done
    return 1
}

# ld_conf_dirs FILE [DEPTH]: the folders an ld.so.conf FILE of the node lists
# (one per line; `include GLOB...`, relative to FILE's folder, recursively).
ld_conf_dirs() {
    local file="$1" depth="${2:-0}" line pat m
    local -a words
    ((depth < 8)) && [[ -f "$(in_root "$file")" ]] || return 0
    while IFS= read -r line || [[ -n "$line" ]]; do
        read -r -a words <<<"${line%%#*}"
        ((${#words[@]})) || continue
        if [[ "${words[0]}" == include ]]; then
            for pat in "${words[@]:1}"; do
                [[ "$pat" == /* ]] || pat="$(dirname "$file")/$pat"
                while IFS= read -r m; do
                    [[ -n "$m" ]] || continue
                    [[ "$root" == / ]] || m="${m#"$root"}"
                    ld_conf_dirs "$m" $((depth + 1))
                done < <(compgen -G "$(in_root "$pat")" | sort)
            done
        elif [[ "${words[0]}" == /* ]]; then
            printf '%s\n' "${words[0]%%=*}"
        fi
    done <"$(in_root "$file")"
}

# check_node_libs: libwasmedge's own dependencies are the node's, found by
# its dynamic linker (libwasmedge's RUNPATH is only $ORIGIN).
check_node_libs() {
    local triplet="" d lib pkg found
    case "$(uname -m)" in
        x86_64 | aarch64 | s390x | riscv64) triplet="$(uname -m)-linux-gnu" ;;
        ppc64le) triplet=powerpc64le-linux-gnu ;;
        armv7l | armv8l) triplet=arm-linux-gnueabihf ;;
    esac
    local -a dirs=() missing=() pkgs=() hints=()
    mapfile -t dirs < <(ld_conf_dirs /etc/ld.so.conf)
    [[ -z "$triplet" ]] || dirs+=("/lib/$triplet" "/usr/lib/$triplet")
    dirs+=(/lib64 /usr/lib64 /lib /usr/lib)
    for lib in libLLVM-16.so.1:libllvm16 libzstd.so.1:libzstd1 libz.so.1:zlib1g; do
        pkg="${lib#*:}" lib="${lib%%:*}" found=""
        for d in "${dirs[@]}"; do
            if node_file "$d/$lib"; then
                found="$d/$lib"
                break
            fi
        done
        if [[ -z "$found" ]]; then
            missing+=("$lib") pkgs+=("$pkg")
            # Where LLVM's own packages keep it, off the linker's path.
            for d in /usr/lib/llvm-16/lib /usr/local/lib/llvm-16/lib /opt/llvm-16/lib; do
                if node_file "$d/$lib"; then
                    hints+=("$d/$lib exists, but the dynamic linker does not search $d (list it in /etc/ld.so.conf.d/ and run ldconfig, or install the package)")
                fi
            done
        fi
    done
    ((${#missing[@]})) || return 0
    log "the WasmEdge shim's libwasmedge needs ${missing[*]} from the node: not found in the dynamic linker's folders (${dirs[*]}) under --root $root"
    local h
    for h in "${hints[@]}"; do
        log "  $h"
    done
    die "install that on the node first (Debian/Ubuntu: apt-get install ${pkgs[*]}), then run this again; nothing was installed (--runtimes wasmtime needs none of it)"
}

want_lwe=0
for e in "${engines[@]}"; do
    [[ "$e" != wasmedge ]] || want_lwe=1
done
if ((want_lwe)); then
    if [[ -n "$lib_src" ]]; then
        has_lwe "$lib_src" || die "no libwasmedge.so.0 in $lib_src (--lib-src)"
    elif has_lwe "$bin_src/lib"; then
        lib_src="$bin_src/lib"
    elif [[ -n "${WASMEDGE_DIR:-}" ]] && has_lwe "$WASMEDGE_DIR/lib"; then
        lib_src="$WASMEDGE_DIR/lib"
    elif has_lwe "$lib_dest"; then
        log "no libwasmedge.so.0 in $bin_src/lib nor \$WASMEDGE_DIR/lib; keeping the installed $lib_dir/libwasmedge.so.0"
    else
        die "the WasmEdge runtime needs libwasmedge 0.17: no libwasmedge.so.0 in $bin_src/lib, \$WASMEDGE_DIR/lib (WASMEDGE_DIR=${WASMEDGE_DIR:-unset}) nor $lib_dir; pass --lib-src DIR (the lib folder of a WasmEdge 0.17 install), or --runtimes wasmtime"
    fi
    check_node_libs
fi

# 1. libwasmedge first, so a new WasmEdge shim never starts without it. Each
#    file is replaced by rename (a running shim keeps the file it mapped),
#    and only when it differs; links after files, so none dangles.
if ((want_lwe)) && [[ -n "$lib_src" ]]; then
    mkdir -p "$lib_dest"
    declare -a lwe_names=()
    declare -A lwe_link=()
    for f in "$lib_src"/$LWE_GLOB; do
        [[ -e "$f" || -L "$f" ]] || continue
        n="$(basename "$f")"
        lwe_names+=("$n")
        if [[ -L "$f" ]]; then
            t="$(readlink "$f")"
            # A link to a sibling stays a link; any other is copied as a file.
            if [[ "$t" != */* && "$t" == libwasmedge.so.0* && -e "$lib_src/$t" ]]; then
                lwe_link[$n]="$t"
            fi
        fi
    done
    lwe_changed=0
    for n in "${lwe_names[@]}"; do
        [[ -z "${lwe_link[$n]:-}" ]] || continue
        src="$lib_src/$n" dest="$lib_dest/$n"
        [[ -f "$src" ]] || die "$src is not a file (a dangling link?)"
        if [[ -f "$dest" && ! -L "$dest" ]] && cmp -s "$src" "$dest"; then
            continue
        fi
        tmp="$(mktemp "$lib_dest/.$n.XXXXXX")"
        cp -L "$src" "$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "$dest"
        log "installed $lib_dir/$n"
        lwe_changed=1
    done
    for n in "${lwe_names[@]}"; do
        t="${lwe_link[$n]:-}"
        [[ -n "$t" ]] || continue
        dest="$lib_dest/$n"
        if [[ -L "$dest" && "$(readlink "$dest")" == "$t" ]]; then
            continue
        fi
        tmp="$(mktemp -u "$lib_dest/.$n.XXXXXX")"
        ln -s "$t" "$tmp"
        mv -fT "$tmp" "$dest"
        log "installed $lib_dir/$n -> $t"
        lwe_changed=1
    done
    # What an earlier version left: libwasmedge.so.0* that --lib-src lacks.
    for f in "$lib_dest"/$LWE_GLOB; do
        [[ -e "$f" || -L "$f" ]] || continue
        n="$(basename "$f")"
        [[ " ${lwe_names[*]} " != *" $n "* ]] || continue
        rm -f "$f"
        log "removed $lib_dir/$n (not in $lib_src)"
        lwe_changed=1
    done
    if ((lwe_changed == 0)); then
        log "$lib_dir/$LWE_GLOB are up to date"
    fi
fi

# 2. The binaries: replaced by rename (a running shim keeps its old file), and
#    only when they differ, so a second run writes nothing.
dest_dir="$(in_root "$bin_dir")"
mkdir -p "$dest_dir"
for e in "${engines[@]}"; do
    name="containerd-shim-$e-v1"
    src="$bin_src/$name" dest="$dest_dir/$name"
    if [[ -f "$src" ]]; then
        if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
            log "$bin_dir/$name is up to date"
        else
            tmp="$(mktemp "$dest_dir/.$name.XXXXXX")"
            cp "$src" "$tmp"
            chmod 0755 "$tmp"
            mv -f "$tmp" "$dest"
            log "installed $bin_dir/$name"
        fi
    elif [[ -x "$dest" ]]; then
        log "no $name in $bin_src; keeping the installed $bin_dir/$name"
    else
        die "no $name in $bin_src (--bin-src) nor in $bin_dir"
    fi
done

# 2b. The sandbox profiles, before the runtimes that name them: each replaced
#     by rename (a shim reading it sees the old or the new file, whole), and
#     only when it differs.
if ((${#profile_files[@]})); then
    prof_dest="$(in_root "$PROFILE_DIR")"
    mkdir -p "$prof_dest"
    prof_changed=0
    for src in "${profile_files[@]}"; do
        n="$(basename "$src")" dest="$prof_dest/$(basename "$src")"
        if [[ -f "$dest" && ! -L "$dest" ]] && cmp -s "$src" "$dest"; then
            continue
        fi
        tmp="$(mktemp "$prof_dest/.$n.XXXXXX")"
        cp -L "$src" "$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "$dest"
        log "installed $PROFILE_DIR/$n"
        prof_changed=1
    done
    if ((prof_changed == 0)); then
        log "$PROFILE_DIR: ${#profile_files[@]} profiles up to date"
    fi
    # Not ours to remove: an older release's, or the operator's own.
    for f in "$prof_dest"/*.toml; do
        [[ -e "$f" ]] || continue
        n="$(basename "$f")"
        [[ -e "$profiles_src/$n" ]] ||
            log "$PROFILE_DIR/$n is not in $profiles_src: left in place, without runtimes"
    done
fi

# 3. The config.
config_path="$(in_root "$config")"
if [[ -z "$config_version" && ! -s "$config_path" ]]; then
    # A new config: its version follows containerd's major version.
    if [[ -n "$containerd_bin" ]]; then
        ver_out="$("$containerd_bin" --version 2>/dev/null)" || ver_out=""
    elif [[ "$root" == / ]]; then
        containerd_bin=containerd
        ver_out="$(containerd --version 2>/dev/null)" || ver_out=""
    else
        containerd_bin="chroot $root containerd"
        ver_out="$(chroot "$root" containerd --version 2>/dev/null)" || ver_out=""
    fi
    # "containerd github.com/containerd/containerd[/v2] v2.1.9 <revision>"
    ver="$(awk '{print $3}' <<<"$ver_out")"
    ver="${ver#v}"
    case "$ver" in
        1.*) config_version=2 ;;
        [2-9].*) config_version=3 ;;
        *) die "no config at $config and cannot tell containerd's version from '$containerd_bin --version' ($ver_out); pass --config-version 2 (containerd 1.x) or 3 (2.x)" ;;
    esac
    log "containerd $ver: a new config gets version $config_version"
fi

rc=0
# The profiles' entries: "SUFFIX:FILE,..." (no commas in their names).
profiles_arg="$(IFS=,; printf '%s' "${profile_specs[*]}")"
result="$("$PYTHON" - "$config_path" "${config_version:-0}" "$PROFILE_DIR" "$profiles_arg" "${engines[@]}" <<'PY'
import os, re, shutil, sys, tempfile, time

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        sys.exit("needs Python 3.11+ (tomllib) or the tomli module")

path, new_version, profile_dir, engines = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[5:]
# (SUFFIX, FILE) per sandbox profile: runtime ENGINE-SUFFIX with options ConfigPath.
profiles = [tuple(p.split(":", 1)) for p in sys.argv[4].split(",") if p]
BEGIN = "# >>> containerd-shim-wasm runtimes (written by install.sh; edit outside this block) >>>"
END = "# <<< containerd-shim-wasm runtimes <<<"
CRI = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}


def fail(msg, code=1):
    print(msg, file=sys.stderr)
    sys.exit(code)


def parse(text, what):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"{what} is not valid TOML: {e}")


def runtimes_of(cfg, version):
    c = cfg.get("plugins", {}).get(CRI[version], {}).get("containerd", {})
    return c.get("runtimes", {}), c.get("default_runtime_name", "runc")


try:
    with open(path, encoding="utf-8") as f:
        old = f.read()
    exists = True
except FileNotFoundError:
    old, exists = "", False

# Split off our block, if there is one.
lines = old.splitlines(keepends=True)
starts = [i for i, l in enumerate(lines) if l.rstrip("\r\n") == BEGIN]
ends = [i for i, l in enumerate(lines) if l.rstrip("\r\n") == END]
if len(starts) > 1 or len(ends) > 1 or len(starts) != len(ends) or (starts and ends[0] < starts[0]):
    fail(f"{path}: the markers of the managed block are broken; fix or remove them by hand:\n  {BEGIN}\n  {END}")
if starts:
    before, after = "".join(lines[: starts[0]]), "".join(lines[ends[0] + 1 :])
else:
    before, after = old, ""
    if before and not before.endswith("\n"):
        before += "\n"
rest = before + after

cfg = parse(rest, path)
if rest.strip():
    if "version" not in cfg:
        fail(f"{path} has no `version`: it is a version 1 config, which this installer does not edit; "
             "convert it first (`containerd config migrate` on 2.x, or write it as version 2)")
    version = cfg["version"]
    if version not in CRI:
        fail(f"{path} has version = {version!r}; this installer knows versions 2 (containerd 1.x) and 3 (2.x)")
else:
    if new_version not in CRI:
        fail("internal: no config version for a new config")
    version = new_version
    rest = before = f"version = {version}\n"
    after = ""

plugin = CRI[version]
have, default_name = runtimes_of(cfg, version)
# (name, runtime_type, wasm, ConfigPath or None): each engine's own runtime,
# then one per profile.
wanted = []
for engine in engines:
    rtype = f"io.containerd.{engine}.v1"
    wanted.append((engine, rtype, True, None))
    for suffix, file in profiles:
        wanted.append((f"{engine}-{suffix}", rtype, True, f"{profile_dir}/{file}"))
tables = []
for name, rtype, wasm, config_path in wanted:
    if name in have:
        got = have[name].get("runtime_type")
        if got != rtype:
            fail(f"{path} already defines the runtime {name!r} with runtime_type {got!r} outside the "
                 f"managed block; not touching it (expected {rtype!r})", 3)
        print(f"runtime {name} is already configured outside the managed block", file=sys.stderr)
        got_path = (have[name].get("options") or {}).get("ConfigPath")
        if config_path and got_path != config_path:
            print(f"  (its options.ConfigPath is {got_path!r}, not {config_path!r}: kept as it is)", file=sys.stderr)
        continue
    tables.append((name, rtype, wasm, config_path))
# containerd 1.x replaces its built-in runtimes by the config's as soon as it
# names one: keep the default runtime alive if the config leaves it to the default.
if version == 2 and tables and default_name == "runc" and "runc" not in have:
    tables.insert(0, ("runc", "io.containerd.runc.v2", False, None))

block = ""
if tables:
    out = [BEGIN]
    for name, rtype, wasm, config_path in tables:
        out.append(f'[plugins."{plugin}".containerd.runtimes.{name}]')
        out.append(f'  runtime_type = "{rtype}"')
        if wasm and version == 3 and not config_path:
            # containerd 2.x: the shim holds the pod's sandbox, no pause container.
            # (2.1 cannot give a runtime with options to a shim-held pod's task.)
            out.append('  sandboxer = "shim"')
        if wasm:
            out.append('  pod_annotations = ["wasm-shim/*"]')
        if config_path:
            # Sent to the shim as runtimeoptions.v1.Options: its sandbox profile.
            out.append(f'[plugins."{plugin}".containerd.runtimes.{name}.options]')
            out.append(f'  ConfigPath = "{config_path}"')
    out.append(END)
    block = "\n".join(out) + "\n"
    if not starts and before.strip():
        block = "\n" + block  # a blank line between the config and a new block
new = before + block + after

# The result must parse and say what we meant, or nothing is written.
check = parse(new, "the edited config")
got, _ = runtimes_of(check, version)
for name, rtype, _, config_path in wanted:
    if got.get(name, {}).get("runtime_type") != rtype:
        fail(f"{path}: after adding the block, runtime {name!r} does not read back as configured "
             "(its tables may be laid out in a way a block at the end cannot extend); not written")
for name, _, _, config_path in tables:
    if config_path and (got[name].get("options") or {}).get("ConfigPath") != config_path:
        fail(f"{path}: after adding the block, runtime {name!r} does not read back with "
             f"options.ConfigPath = {config_path!r}; not written")

if exists and new == old:
    print("unchanged")
    sys.exit(0)

d = os.path.dirname(path) or "."
os.makedirs(d, mode=0o755, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=d, prefix=".config.toml.")
try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new)
    if exists:
        st = os.stat(path)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.chown(tmp, st.st_uid, st.st_gid)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup, n = f"{path}.bak.{stamp}", 1
        while os.path.exists(backup):
            backup, n = f"{path}.bak.{stamp}.{n}", n + 1
        shutil.copy2(path, backup)
        print(f"backup: {backup}", file=sys.stderr)
    else:
        os.chmod(tmp, 0o644)
    os.replace(tmp, path)
except BaseException:
    if os.path.exists(tmp):
        os.unlink(tmp)
    raise
print("created" if not exists else "changed")
PY
)" || rc=$?
if ((rc != 0)); then
    log "config $config not changed"
    exit "$rc"
fi

case "$result" in
    unchanged)
        log "config $config already up to date: containerd not restarted"
        exit 0
        ;;
    created | changed)
        all_runtimes=()
        for e in "${engines[@]}"; do
            all_runtimes+=("$e")
            for p in "${profile_specs[@]}"; do
                all_runtimes+=("$e-${p%%:*}")
            done
        done
        log "config $config $result (runtimes: ${all_runtimes[*]})"
        ;;
    *) die "unexpected result from the config editor: $result" ;;
esac

# 4. containerd reads its config at start only.
if ((restart == 0)); then
    log "--no-restart: restart containerd yourself for the runtimes to take effect"
    exit 0
fi
if [[ -z "$restart_cmd" ]]; then
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        restart_cmd="systemctl restart containerd"
    else
        die "no systemd here: restart containerd yourself, or pass --restart-cmd CMD (or --no-restart)"
    fi
fi
log "restarting containerd: $restart_cmd"
bash -c "$restart_cmd"
log "done"
