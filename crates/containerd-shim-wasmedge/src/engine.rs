//! How WasmEdge compiles and runs; everything else comes from the core.
//!
//! **Artifact format: universal Wasm**, not a shared library. WasmEdge's AOT compiler can write
//! either; the universal format is the module itself with the native code in a custom section.
//! - It is still a Wasm module, so an instance reads the declared memories and the imports from
//!   it: the core hands `prepare` only the artifact, not the original module.
//! - It is loaded from memory: WasmEdge copies the code into anonymous executable pages instead
//!   of `dlopen`-ing a file of the cache, so no library constructor of a cache file ever runs,
//!   a `noexec` cache folder works, and the cache's `<key>.bin` name is no problem (the SDK's
//!   `Loader::from_file` only takes `.wasm`, `.so`, `.wat` or extension-less paths, and WasmEdge
//!   refuses shared libraries from memory).
//! - The costs: each instance copies its code instead of sharing mapped pages, and a native
//!   section WasmEdge rejects (made by another WasmEdge version) falls back to the interpreter
//!   with only a warning, where a shared library would fail to load. The fingerprint (WasmEdge
//!   version, proposals, optimisation level, output format, CPU features) gives such an
//!   artifact another cache key, so an instance never gets one.
//!
//! WasmEdge 0.17 runs native code only in [`RunMode::Aot`]: in its default interpreter mode it
//! silently ignores the compiled section. Every configuration here sets it.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

use wasm_shim_core::{Capability, Engine, LoadedArtifact, ModuleKind};
use wasmedge_sdk::config::{
    CommonConfigOptions, CompilerConfigOptions, Config, ConfigBuilder, RuntimeConfigOptions,
};
use wasmedge_sdk::utils::CoreVersion;
use wasmedge_sdk::{
    Compiler, CompilerOptimizationLevel, CompilerOutputFormat, RunMode, WasmStandard,
};

/// The WasmEdge release this shim is written and type-checked against.
const WASMEDGE_SERIES: (u32, u32) = (0, 17);

/// Why a component is refused: WasmEdge 0.17 has no component model.
const NO_COMPONENTS: &str = "WasmEdge 0.17 runs WASI preview 1 core modules only, not WASI preview 2 components; use the wasmtime runtime (io.containerd.wasmtime.v1)";
/// Why `wasi:http/proxy` serving is refused: it is a component world.
pub const NO_WASI_HTTP: &str = "wasi:http/proxy is a component world, and WasmEdge 0.17 has no component model; use the wasmtime runtime (io.containerd.wasmtime.v1)";

pub struct WasmEdgeEngine {
    fingerprint: String,
}

impl Engine for WasmEdgeEngine {
    const NAME: &'static str = "wasmedge";
    const LACKS: &'static [(Capability, &'static str)] = &[
        (Capability::Components, NO_COMPONENTS),
        (Capability::WasiHttp, NO_WASI_HTTP),
    ];
    // Instance processes start with a cleared environment: keep where the plugins and the
    // library are.
    const NODE_ENV: &'static [&'static str] = &["WASMEDGE_PLUGIN_PATH", "LD_LIBRARY_PATH"];

    fn new() -> anyhow::Result<Self> {
        // libwasmedge keeps the soname libwasmedge.so.0 across releases, so the dynamic linker
        // would happily give us another one; its C API is not stable across them.
        let version = CoreVersion::version_string();
        if (CoreVersion::major(), CoreVersion::minor()) != WASMEDGE_SERIES {
            bail!(
                "libwasmedge {version} is installed, but this shim is built for WasmEdge {}.{}.x (wasmedge-sdk 0.17)",
                WASMEDGE_SERIES.0,
                WASMEDGE_SERIES.1
            );
        }
        // WasmEdge's log lines go to the shim log, not to the container's stderr.
        crate::engine_log::install();
        Ok(WasmEdgeEngine {
            fingerprint: fingerprint(&version),
        })
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn precompile(&self, wasm: &[u8], kind: ModuleKind) -> anyhow::Result<Vec<u8>> {
        refuse_components(kind)?;
        let config = ConfigBuilder::new(common_options())
            .with_compiler_config(compiler_options())
            .build()
            .context("configuring the WasmEdge compiler")?;
        let compiler = Compiler::new(Some(&config))
            .context("creating the WasmEdge AOT compiler (is libwasmedge built with LLVM?)")?;
        // The compiler writes a file (it loads and validates the module first); the core wants
        // the bytes, and writes them into its cache itself.
        let dir = tempfile::Builder::new()
            .prefix("wasmedge-aot.")
            .tempdir()
            .context("creating a folder for the compiler's output")?;
        // Native code that came with the module is never used (see `native_section`).
        let (wasm, cut) = crate::native_section::strip(wasm)?;
        if cut > 0 {
            log::info!("ignoring {cut} native code section(s) that came with the module: this node compiles its own");
        }
        // Named `.so` by the SDK whatever the format; the content is universal Wasm.
        let out = compiler
            .compile_from_bytes(&wasm, "module", dir.path())
            .map_err(|e| crate::engine_log::error("AOT compile failed", e))?;
        std::fs::read(&out).with_context(|| format!("reading {}", out.display()))
    }

    fn load(&self, artifact: &Path, kind: ModuleKind) -> anyhow::Result<Box<dyn LoadedArtifact>> {
        refuse_components(kind)?;
        Ok(Box::new(crate::preview1::load(artifact)?))
    }
}

fn refuse_components(kind: ModuleKind) -> Result<()> {
    match kind {
        ModuleKind::Module => Ok(()),
        ModuleKind::Component => bail!("{NO_COMPONENTS}"),
    }
}

/// The WebAssembly proposals compiled and run, the same for both: WebAssembly 2.0 exactly
/// (mutable globals, non-trapping float-to-int, sign extension, multi-value, bulk memory,
/// reference types, SIMD), which is what `wasm32-wasip1` toolchains emit. WasmEdge's default
/// set adds proposals its AOT compiler does not support (it warns about exception handling),
/// and a set chosen here does not change under us with a WasmEdge release.
pub fn common_options() -> CommonConfigOptions {
    CommonConfigOptions::from_wasm_standard(WasmStandard::Wasm2).run_mode(RunMode::Aot)
}

/// Native code for this host's CPU (hence its features in the fingerprint), optimised at
/// LLVM's O2: fast code without O3's compile time, paid at a container's first Create.
fn compiler_options() -> CompilerConfigOptions {
    CompilerConfigOptions::new()
        .out_format(CompilerOutputFormat::Wasm)
        .optimization_level(CompilerOptimizationLevel::O2)
        .generic_binary(false)
        .interruptible(false)
        .dump_ir(false)
}

/// The configuration an instance loads and validates its module with.
pub fn load_config() -> Result<Config> {
    ConfigBuilder::new(common_options())
        .build()
        .context("configuring WasmEdge")
}

/// The configuration an instance runs its module with (its store and executor).
pub fn runtime_config(runtime: RuntimeConfigOptions) -> Result<Config> {
    ConfigBuilder::new(common_options())
        .with_runtime_config(runtime)
        .build()
        .context("configuring WasmEdge")
}

/// Everything that shapes the native code, hashed: the WasmEdge release actually loaded, the
/// options given to the compiler (by their `Debug` form, so that a new option of the SDK
/// changes it), the target and the host CPU features the code may use.
fn fingerprint(version: &str) -> String {
    let description = fingerprint_description(version, &cpu_features());
    format!(
        "wasmedge/{version}/{}",
        hex::encode(Sha256::digest(description.as_bytes()))
    )
}

fn fingerprint_description(version: &str, cpu_features: &[&str]) -> String {
    let mut d = String::new();
    let _ = writeln!(d, "wasmedge {version}");
    let _ = writeln!(d, "proposals {:?}", common_options());
    let _ = writeln!(d, "compiler {:?}", compiler_options());
    let _ = writeln!(
        d,
        "target {}-{}-{}",
        std::env::consts::ARCH,
        std::env::consts::OS,
        if cfg!(target_env = "musl") {
            "musl"
        } else {
            "gnu"
        }
    );
    let _ = writeln!(d, "cpu {}", cpu_features.join(","));
    d
}

/// The instruction-set extensions of this CPU that LLVM may use for host code.
fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! x86 {
            ($($f:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($f) { found.push($f); })*
            };
        }
        x86!(
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "sse4a",
            "popcnt",
            "lzcnt",
            "bmi1",
            "bmi2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "movbe",
            "adx",
            "aes",
            "pclmulqdq",
            "sha",
            "tbm",
            "cmpxchg16b",
            "avx512f",
            "avx512cd",
            "avx512bw",
            "avx512dq",
            "avx512vl",
            "avx512ifma",
            "avx512vbmi",
            "avx512vbmi2",
            "avx512vnni",
            "avx512bitalg",
            "avx512vpopcntdq",
            "avx512bf16",
            "avx512fp16",
            "gfni",
            "vaes",
            "vpclmulqdq"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! arm {
            ($($f:tt),*) => {
                $(if std::arch::is_aarch64_feature_detected!($f) { found.push($f); })*
            };
        }
        arm!(
            "neon", "fp16", "lse", "rdm", "crc", "aes", "sha2", "sha3", "dotprod", "fhm", "rcpc",
            "rcpc2", "jsconv", "fcma", "i8mm", "bf16", "sve", "sve2"
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_names_everything_that_shapes_code() {
        let d = fingerprint_description("0.17.1", &["avx2", "bmi2"]);
        for needle in [
            "wasmedge 0.17.1",
            "run_mode: Aot",
            "exception_handling: false",
            "simd: true",
            "out_format: Wasm",
            "opt_level: O2",
            "generic_binary: false",
            "cpu avx2,bmi2",
        ] {
            assert!(d.contains(needle), "{needle:?} missing from\n{d}");
        }
        assert_ne!(d, fingerprint_description("0.17.2", &["avx2", "bmi2"]));
        assert_ne!(d, fingerprint_description("0.17.1", &["avx2"]));
    }
}
