//! `containerd-shim-wasmedge-v1`: the containerd runtime `io.containerd.wasmedge.v1`, running
//! WASI preview 1 core modules with WasmEdge 0.17 (libwasmedge, ahead-of-time compiled).
//!
//! Built only where libwasmedge 0.17 is installed; elsewhere `DOCS_RS=1` type-checks it against
//! the SDK's bundled bindings (README, WasmEdge). The unit tests run that way too, without the
//! library: a test may only reach code that makes no libwasmedge call, or it fails to link.

mod engine;
mod engine_log;
mod inspect;
mod memory;
mod native_section;
mod plugins;
mod preview1;
mod wasi;

fn main() {
    wasm_shim_core::shim::main::<engine::WasmEdgeEngine>("io.containerd.wasmedge.v1");
}
