# libwasmedge 0.17.x for containerd-shim-wasmedge-v1, the way a node operator gets it.
# Sourced by scripts/install-deps and scripts/build; bash only.
#
# Order: an existing install (WASMEDGE_DIR, /usr/local, ~/.wasmedge); else a prefix that an
# earlier run built from the source tarball; else a build from the tarball (default: the
# pristine upstream one in ../shared/third_party/, or WASMEDGE_SRC_TARBALL), checked against
# its sha256 first; else a clear error. The build prefix lives outside the clone, keyed by the
# tarball's checksum, so a second run (another clone, CI) reuses it at no cost.
#
# Environment:
#   WASMEDGE_DIR            an install to use (include/wasmedge/wasmedge.h, lib/libwasmedge.so)
#   WASMEDGE_SRC_TARBALL    WasmEdge source tarball to build from (with WASMEDGE_SRC_SHA256)
#   WASMEDGE_SRC_SHA256     its expected sha256 (default: the 0.17.1 tarball's)
#   WASMEDGE_FMT_TARBALL, WASMEDGE_SPDLOG_TARBALL
#                           the fmt 11.0.2 / spdlog 1.13.0 sources its CMake pins (default:
#                           beside the WasmEdge tarball); their sha256 are checked too
#   WASMEDGE_BUILD_ROOT     where built prefixes live (default /var/cache/containerd-shim-wasm,
#                           for a user other than root ~/.cache/containerd-shim-wasm)
#   WASMEDGE_BUILD_JOBS     ninja -j (default: nproc)

LIBWASMEDGE_VERSION_PREFIX="0.17."
LIBWASMEDGE_BUILD_VERSION="0.17.1"
LIBWASMEDGE_SHA256_DEFAULT="e66c861c0b4cc5d64f1bcb9839134167b915a71e41c54dab58996a85f3f69605"
LIBWASMEDGE_FMT_SHA256="bc5263063f4d848a960ae1f9ff9c3ad3c09c342d738bfdc07ea2fe9057ccd60b"
LIBWASMEDGE_SPDLOG_SHA256="ec179375c2afeace8849581f5051fe78e919c26ce6b1394c876ee59b5ae05ba2"
# What building it needs from Debian 12 (LLVM 16 is the newest there; 0.17.1 takes 12 to 21).
LIBWASMEDGE_BUILD_PACKAGES=(cmake ninja-build g++ llvm-16-dev liblld-16-dev libpolly-16-dev
    libzstd-dev zlib1g-dev)
# What the library needs at run time on a node: libLLVM-16.so.1 (lld is linked in statically).
LIBWASMEDGE_RUNTIME_PACKAGES=(libllvm16 libzstd1 zlib1g)

lwe_log() { printf '[libwasmedge] %s\n' "$*" >&2; }

# lwe_version PREFIX: the WasmEdge version an install's header declares, or nothing.
lwe_version() {
    sed -n 's/^#define WASMEDGE_VERSION "\([^"]*\)".*/\1/p' \
        "$1/include/wasmedge/version.h" 2>/dev/null | head -n 1
}

# lwe_libdir PREFIX: the folder holding libwasmedge.so (lib or lib64), or nothing.
lwe_libdir() {
    local d
    for d in "$1/lib" "$1/lib64"; do
        if [[ -e "$d/libwasmedge.so" ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# lwe_usable PREFIX: whether PREFIX holds a libwasmedge 0.17.x with its header.
lwe_usable() {
    local prefix="$1" v
    [[ -n "$prefix" && -f "$prefix/include/wasmedge/wasmedge.h" ]] || return 1
    lwe_libdir "$prefix" >/dev/null || return 1
    v="$(lwe_version "$prefix")"
    if [[ "$v" != "$LIBWASMEDGE_VERSION_PREFIX"* ]]; then
        lwe_log "$prefix holds WasmEdge '${v:-unknown}', not ${LIBWASMEDGE_VERSION_PREFIX}x: not used"
        return 1
    fi
}

lwe_tarball() {
    echo "${WASMEDGE_SRC_TARBALL:-$ROOT/../shared/third_party/wasmedge-$LIBWASMEDGE_BUILD_VERSION-src.tar.gz}"
}

lwe_tarball_sha256() {
    if [[ -n "${WASMEDGE_SRC_TARBALL:-}" ]]; then
        echo "${WASMEDGE_SRC_SHA256:?WASMEDGE_SRC_SHA256 must name the sha256 of WASMEDGE_SRC_TARBALL}"
    else
        echo "$LIBWASMEDGE_SHA256_DEFAULT"
    fi
}

# lwe_build_prefix: where a build of the tarball goes (and an earlier one is found).
lwe_build_prefix() {
    local sha
    sha="$(lwe_tarball_sha256)"
    local root=/var/cache/containerd-shim-wasm
    [[ "$(id -u)" == 0 ]] || root="${XDG_CACHE_HOME:-$HOME/.cache}/containerd-shim-wasm"
    echo "${WASMEDGE_BUILD_ROOT:-$root}/libwasmedge-${sha:0:16}"
}

# lwe_find: prints the prefix of a usable libwasmedge without building one, or fails.
lwe_find() {
    local prefix
    for prefix in "${WASMEDGE_DIR:-}" /usr/local "$HOME/.wasmedge"; do
        [[ -n "$prefix" ]] || continue
        if lwe_usable "$prefix"; then
            echo "$prefix"
            return 0
        fi
    done
    prefix="$(lwe_build_prefix)"
    # .complete is written last: a build that was interrupted is not taken.
    if [[ -f "$prefix/.complete" ]] && lwe_usable "$prefix"; then
        echo "$prefix"
        return 0
    fi
    return 1
}

lwe_check_sha256() {
    local file="$1" want="$2" got
    got="$(sha256sum "$file" | cut -d' ' -f1)"
    if [[ "$got" != "$want" ]]; then
        lwe_log "checksum mismatch for $file: expected $want, got $got; refusing to build it"
        return 1
    fi
}

lwe_how_to_install() {
    cat >&2 <<EOF
[libwasmedge] no libwasmedge ${LIBWASMEDGE_VERSION_PREFIX}x found (looked in WASMEDGE_DIR, /usr/local,
[libwasmedge] ~/.wasmedge and $(lwe_build_prefix)), and no source tarball to build one.
[libwasmedge] Install it with WasmEdge's official installer (utils/install_v2.sh of the WasmEdge
[libwasmedge] repository, run as 'bash install_v2.sh -v $LIBWASMEDGE_BUILD_VERSION'; it installs into
[libwasmedge] ~/.wasmedge), or point WASMEDGE_DIR at an install, or
[libwasmedge] WASMEDGE_SRC_TARBALL (+ WASMEDGE_SRC_SHA256) at a WasmEdge source tarball.
EOF
}

# lwe_build: builds the tarball into lwe_build_prefix. Needs LIBWASMEDGE_BUILD_PACKAGES.
lwe_build() {
    local tarball sha prefix dir fmt spdlog work
    tarball="$(lwe_tarball)"
    if [[ ! -f "$tarball" ]]; then
        lwe_how_to_install
        return 1
    fi
    sha="$(lwe_tarball_sha256)"
    dir="$(dirname "$tarball")"
    fmt="${WASMEDGE_FMT_TARBALL:-$dir/fmt-11.0.2-src.tar.gz}"
    spdlog="${WASMEDGE_SPDLOG_TARBALL:-$dir/spdlog-1.13.0-src.tar.gz}"
    lwe_check_sha256 "$tarball" "$sha" || return 1
    lwe_check_sha256 "$fmt" "$LIBWASMEDGE_FMT_SHA256" || return 1
    lwe_check_sha256 "$spdlog" "$LIBWASMEDGE_SPDLOG_SHA256" || return 1

    prefix="$(lwe_build_prefix)"
    mkdir -p "$(dirname "$prefix")"
    work="$(mktemp -d "$(dirname "$prefix")/build.XXXXXX")"
    lwe_log "building $(basename "$tarball") into $prefix (about 15 minutes on 2 cores)"
    (
        set -euo pipefail
        cd "$work"
        mkdir src fmt spdlog
        tar -xzf "$tarball" -C src --strip-components=1
        tar -xzf "$fmt" -C fmt --strip-components=1
        tar -xzf "$spdlog" -C spdlog --strip-components=1
        # A `git archive` has no .git: without VERSION, CMake names it 0.0.0-unreleased.
        # No newline: CMake pastes the file into a C string literal.
        [[ -f src/VERSION ]] || printf %s "$LIBWASMEDGE_BUILD_VERSION" >src/VERSION
        cmake -S src -B build -G Ninja \
            -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_INSTALL_PREFIX="$prefix" \
            -DCMAKE_INSTALL_LIBDIR=lib \
            -DWASMEDGE_USE_LLVM=ON \
            -DWASMEDGE_BUILD_TESTS=OFF \
            -DWASMEDGE_BUILD_EXAMPLE=OFF \
            -DWASMEDGE_BUILD_PLUGINS=OFF \
            -DLLVM_DIR=/usr/lib/llvm-16/lib/cmake/llvm \
            -DLLD_DIR=/usr/lib/llvm-16/lib/cmake/lld \
            -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
            -DFETCHCONTENT_SOURCE_DIR_FMT="$work/fmt" \
            -DFETCHCONTENT_SOURCE_DIR_SPDLOG="$work/spdlog" \
            -DCMAKE_DISABLE_FIND_PACKAGE_spdlog=ON >"$work/configure.log" 2>&1 ||
            { tail -n 40 "$work/configure.log" >&2; exit 1; }
        ninja -C build -j "${WASMEDGE_BUILD_JOBS:-$(nproc)}" >"$work/build.log" 2>&1 ||
            { tail -n 60 "$work/build.log" >&2; exit 1; }
        rm -rf "$prefix"
        ninja -C build install >"$work/install.log" 2>&1 ||
            { tail -n 40 "$work/install.log" >&2; exit 1; }
        echo "$sha  $(basename "$tarball")" >"$prefix/.complete"
    ) || {
        lwe_log "build failed; its logs are in $work"
        return 1
    }
    rm -rf "$work"
    lwe_usable "$prefix" || { lwe_log "the build left no usable install in $prefix"; return 1; }
    lwe_log "built WasmEdge $(lwe_version "$prefix") into $prefix"
}
