#!/usr/bin/env bash
# Builds the test guests and the OCI image tarballs the shim's tests import
# with `ctr image import`. Works from any directory; safe to re-run (cargo and
# the C build skip unchanged work, and wasm-image output is deterministic).
#
# Output, all under test-images/out/ (gitignored):
#   modules/*.wasm   the raw modules (hello, probe-p1, probe-p2, c-hello,
#                    cri, cri-p1, http-proxy and the bad ones), for tests that do not go
#                    through images
#   *.tar            OCI image-layout tarballs, one per image (see below), among
#                    them Wasm OCI images whose module is a layer of its own
#
# Needs: libwasmedge's wasmedge CLI (scripts/install-deps); rustup targets wasm32-wasip1 and wasm32-wasip2; clang, lld, wasi-libc
# and libclang-rt-dev-wasm32 (Debian) for the C guest; busybox-static for the
# busybox image. Environment overrides:
#   WASI_SYSROOT   sysroot for the C guest (default: /usr/share/wasi-sysroot
#                  if present, else /usr, where Debian's wasi-libc lives)
#   CLANG          C compiler (default: clang)
#   BUSYBOX        static busybox binary (default: /bin/busybox)
#   CC             C compiler of the (static, Linux) pause program (default: gcc)
#   WASM_IMAGE     an already built wasm-image binary (default: build it with
#                  `cargo build --release -p wasm-image` in the root workspace)
#   BUILD_BIG=1    also build the big guest (~5 MB of generated code, a minute or
#                  two of rustc) and its image big.tar, for scripts/bench
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
guests="$here/guests"
out="$here/out"
modules="$out/modules"
build="$out/build"

log() { printf '==> %s\n' "$*"; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$out" "$modules" "$build"

# --- Rust guests -------------------------------------------------------------
installed="$(rustup target list --installed 2>/dev/null || true)"
for t in wasm32-wasip1 wasm32-wasip2; do
    grep -qx "$t" <<<"$installed" ||
        die "Rust target $t is not installed: run 'rustup target add wasm32-wasip1 wasm32-wasip2'"
done
log "building Rust guests (wasm32-wasip1, wasm32-wasip2)"
# An explicit --target-dir keeps a CARGO_TARGET_DIR from the environment from
# moving the guests out of test-images/guests/target.
cargo build --release \
    --manifest-path "$guests/Cargo.toml" \
    --target-dir "$guests/target" \
    --target wasm32-wasip1 --target wasm32-wasip2
p1="$guests/target/wasm32-wasip1/release"
p2="$guests/target/wasm32-wasip2/release"
cp "$p1/hello.wasm" "$modules/hello.wasm"
cp "$p1/probe.wasm" "$modules/probe-p1.wasm"
cp "$p2/probe.wasm" "$modules/probe-p2.wasm"
cp "$p2/cri.wasm" "$modules/cri.wasm"
# The same guest for WasmEdge: its sockets through WasmEdge's own extension.
cp "$p1/cri.wasm" "$modules/cri-p1.wasm"
cp "$p2/http_proxy.wasm" "$modules/http-proxy.wasm"
# The CPU-bound guest of scripts/bench (native vs the engines).
cp "$p1/cpu.wasm" "$modules/cpu.wasm"
if [[ "${BUILD_BIG:-0}" == 1 ]]; then
    log "building the big guest (wasm32-wasip1; takes a while the first time)"
    cargo build --release \
        --manifest-path "$guests/Cargo.toml" \
        --target-dir "$guests/target" \
        --target wasm32-wasip1 -p big
    cp "$p1/big.wasm" "$modules/big.wasm"
fi

# --- C guest -----------------------------------------------------------------
clang="${CLANG:-clang}"
command -v "$clang" >/dev/null ||
    die "$clang not found: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32"
if [[ -z "${WASI_SYSROOT:-}" ]]; then
    if [[ -d /usr/share/wasi-sysroot ]]; then
        WASI_SYSROOT=/usr/share/wasi-sysroot
    else
        WASI_SYSROOT=/usr # Debian: /usr/include/wasm32-wasi, /usr/lib/wasm32-wasi
    fi
fi
c_src="$guests/c/hello.c"
c_out="$build/c-hello.wasm"
if [[ ! -s "$c_out" || "$c_src" -nt "$c_out" || "${BASH_SOURCE[0]}" -nt "$c_out" ]]; then
    log "building C guest with $clang (sysroot $WASI_SYSROOT)"
    "$clang" --target=wasm32-wasi --sysroot="$WASI_SYSROOT" \
        -O2 -Wall -Wextra -Werror -Wl,--strip-all \
        -o "$c_out.tmp" "$c_src" ||
        die "C guest build failed (needs clang, lld, wasi-libc, libclang-rt-dev-wasm32)"
    mv "$c_out.tmp" "$c_out"
else
    log "C guest is up to date"
fi
cp "$c_out" "$modules/c-hello.wasm"

# --- Pause (the CRI tests' sandbox image): a static Linux program ----------
cc="${CC:-gcc}"
pause_src="$here/pause/pause.c"
pause_out="$build/pause"
if [[ ! -s "$pause_out" || "$pause_src" -nt "$pause_out" || "${BASH_SOURCE[0]}" -nt "$pause_out" ]]; then
    log "building the pause program with $cc -static"
    "$cc" -static -Os -Wall -Wextra -Werror -s -o "$pause_out.tmp" "$pause_src" ||
        die "pause build failed (needs gcc and the static libc of libc6-dev)"
    mv "$pause_out.tmp" "$pause_out"
else
    log "pause is up to date"
fi

# --- A module compiled elsewhere ----------------------------------------------
# hello.wasm as WasmEdge's own compiler ships it (universal Wasm: the module plus native code
# in a `wasmedge` custom section), as an image may bring it. The shims must never run that
# native code: the node compiles its own (crates/e2e/tests/precompile.rs).
ROOT="$root"
# shellcheck source=scripts/lib/libwasmedge.sh
source "$root/scripts/lib/libwasmedge.sh"
wasmedge_prefix="$(lwe_find)" ||
    die "no libwasmedge (with its wasmedge CLI) found: run scripts/install-deps"
universal="$build/hello-universal.wasm"
if [[ ! -s "$universal" || "$modules/hello.wasm" -nt "$universal" ]]; then
    log "compiling hello.wasm with $wasmedge_prefix/bin/wasmedge compile"
    "$wasmedge_prefix/bin/wasmedge" compile "$modules/hello.wasm" "$universal.tmp" >/dev/null ||
        die "wasmedge compile failed"
    mv "$universal.tmp" "$universal"
fi
cp "$universal" "$modules/hello-universal.wasm"

# --- Bad modules -------------------------------------------------------------
# A valid header followed by bytes that are no section; no header at all; nothing.
printf '\0asm\1\0\0\0\377\377\377\377garbage after a valid header\n' >"$modules/malformed.wasm"
printf 'this is a text file, not a WebAssembly module\n' >"$modules/garbage.wasm"
# Valid modules that must fail at instantiation, encoded by hand (section by section):
# start-trap: (func $s unreachable) (start $s) (func (export "_start"))
printf '\0asm\1\0\0\0''\1\4\1\x60\0\0''\3\3\2\0\0''\7\x0a\1\6_start\0\1''\x08\1\0''\x0a\x08\2\3\0\0\x0b\2\0\x0b' \
    >"$modules/start-trap.wasm"
# bad-import: imports env.missing, which no WASI host provides, and calls it from _start.
printf '\0asm\1\0\0\0''\1\4\1\x60\0\0''\2\x0f\1\3env\7missing\0\0''\3\2\1\0''\7\x0a\1\6_start\0\1''\x0a\6\1\4\0\x10\0\x0b' \
    >"$modules/bad-import.wasm"
: >"$modules/empty.wasm"

# --- wasm-image --------------------------------------------------------------
if [[ -n "${WASM_IMAGE:-}" ]]; then
    wasm_image="$WASM_IMAGE"
else
    log "building wasm-image"
    (cd "$root" && cargo build --release -p wasm-image)
    target_dir="${CARGO_TARGET_DIR:-target}"
    [[ "$target_dir" = /* ]] || target_dir="$root/$target_dir"
    wasm_image="$target_dir/release/wasm-image"
fi
[[ -x "$wasm_image" ]] || die "wasm-image binary not found at $wasm_image"

# --- Images ------------------------------------------------------------------
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch="$(uname -m)" ;;
esac
platform="linux/$arch"

# image FILE-STEM REF [wasm-image options...]
image() {
    local stem="$1" ref="$2"
    shift 2
    "$wasm_image" build --name "$ref" --out "$out/$stem.tar" --platform "$platform" "$@" >/dev/null
    built+=("$(printf '%-34s %-16s %s' "$ref" "$stem.tar" "$(stat -c %s "$out/$stem.tar") bytes")")
}
built=()

data="$build/data.txt"
printf 'data-in-app\n' >"$data"

log "writing image tarballs to $out"
image hello localhost/test/hello:latest \
    --file "$modules/hello.wasm:/hello.wasm:0755" --entrypoint /hello.wasm
for variant in p1 p2; do
    stem=probe
    [[ $variant = p2 ]] && stem=probe-p2
    image "$stem" "localhost/test/$stem:latest" \
        --file "$modules/probe-$variant.wasm:/probe.wasm:0755" \
        --dir /app:0755 --file "$data:/app/data.txt:0644" \
        --env PROBE_IMAGE_ENV=from-image --entrypoint /probe.wasm
done
image hello-universal localhost/test/hello-universal:latest \
    --file "$modules/hello-universal.wasm:/hello.wasm:0755" --entrypoint /hello.wasm
image c-hello localhost/test/c-hello:latest \
    --file "$modules/c-hello.wasm:/hello.wasm:0755" --entrypoint /hello.wasm
image c-greet localhost/test/c-greet:latest \
    --file "$modules/c-hello.wasm:/hello.wasm:0755" --entrypoint '/hello.wasm#greet'
for bad in malformed garbage empty start-trap bad-import; do
    image "$bad" "localhost/test/$bad:latest" \
        --file "$modules/$bad.wasm:/bad.wasm:0755" --entrypoint /bad.wasm
done
image missing localhost/test/missing:latest \
    --file "$modules/hello.wasm:/hello.wasm:0755" --entrypoint /nope.wasm
if [[ "${BUILD_BIG:-0}" == 1 ]]; then
    image big localhost/test/big:latest \
        --file "$modules/big.wasm:/big.wasm:0755" --entrypoint /big.wasm
fi

# Wasm OCI images: no filesystem layer, the module is a layer of its own that the shim reads
# from containerd's content store (containerd 1.7 and later; crates/e2e/tests/oci.rs).
# component-layer: an image config (os wasip1/wasip2, arch wasm), so `ctr run` can start it.
# wasm: the CNCF Wasm OCI artifact, whose config is not an image config: CRI only.
wasm_layout() {
    local stem="$1" ref="$2"
    shift 2
    "$wasm_image" build --name "$ref" --out "$out/$stem.tar" "$@" >/dev/null
    built+=("$(printf '%-34s %-16s %s' "$ref" "$stem.tar" "$(stat -c %s "$out/$stem.tar") bytes")")
}
wasm_layout hello-layer localhost/test/hello-layer:latest \
    --layout component-layer --module "$modules/hello.wasm"
wasm_layout probe-p2-layer localhost/test/probe-p2-layer:latest \
    --layout component-layer --module "$modules/probe-p2.wasm" --title probe.wasm
wasm_layout hello-artifact localhost/test/hello-artifact:latest \
    --layout wasm --module "$modules/hello.wasm"

busybox="${BUSYBOX:-/bin/busybox}"
[[ -x "$busybox" ]] || die "$busybox not found: apt-get install busybox-static"
links=()
for applet in sh echo sleep cat true wget ls ps kill hostname; do
    links+=(--symlink "/bin/$applet:busybox")
done
image busybox localhost/test/busybox:latest \
    --file "$busybox:/bin/busybox:0755" "${links[@]}" --env PATH=/bin --cmd sh

image pause localhost/test/pause:latest \
    --file "$pause_out:/pause:0755" --entrypoint /pause
image cri localhost/test/cri:latest \
    --file "$modules/cri.wasm:/cri.wasm:0755" --entrypoint /cri.wasm
image cri-p1 localhost/test/cri-p1:latest \
    --file "$modules/cri-p1.wasm:/cri.wasm:0755" --entrypoint /cri.wasm
image http-proxy localhost/test/http-proxy:latest \
    --file "$modules/http-proxy.wasm:/http-proxy.wasm:0755" --entrypoint /http-proxy.wasm
image cpu localhost/test/cpu:latest \
    --file "$modules/cpu.wasm:/cpu.wasm:0755" --entrypoint /cpu.wasm

log "built:"
printf '    %s\n' "${built[@]}"
log "modules in $modules:"
for m in "$modules"/*.wasm; do
    printf '    %-20s %s bytes\n' "$(basename "$m")" "$(stat -c %s "$m")"
done
