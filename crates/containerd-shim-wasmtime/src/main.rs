//! `containerd-shim-wasmtime-v1`: the containerd runtime `io.containerd.wasmtime.v1`.

mod engine;
mod http_proxy;
mod limits;
mod network;
mod preview1;
mod preview2;
mod wasi_ctx;

fn main() {
    wasm_shim_core::shim::main::<engine::WasmtimeEngine>("io.containerd.wasmtime.v1");
}
