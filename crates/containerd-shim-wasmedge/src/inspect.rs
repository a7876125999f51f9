//! What a module imports and which memories it declares, read from its binary.
//!
//! The artifact is universal Wasm (see `engine`), so it is still a Wasm module. Reading it here,
//! rather than through WasmEdge, shows memories that are neither imported nor exported (which
//! WasmEdge's API cannot list), and lets the instance decide about plugins before anything of
//! WasmEdge has run in its process.

use anyhow::{Context, Result};
use wasmparser::{Parser, Payload, TypeRef};

/// Size of a WebAssembly page.
pub const WASM_PAGE: u64 = 64 * 1024;

/// One memory the module imports or defines, from its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredMemory {
    pub imported: bool,
    /// Initial size in bytes.
    pub initial_bytes: u64,
}

/// One import: the module it comes from and the item's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub module: String,
    pub name: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub imports: Vec<Import>,
    /// Imported memories first, then defined ones.
    pub memories: Vec<DeclaredMemory>,
}

/// The imports and memories of a core module, from its import and memory sections.
pub fn inspect(wasm: &[u8]) -> Result<Inspected> {
    let mut found = Inspected::default();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.context("reading the module's sections")? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.context("reading an import")?;
                    if let TypeRef::Memory(ty) = import.ty {
                        found.memories.push(DeclaredMemory {
                            imported: true,
                            initial_bytes: bytes(ty.initial, ty.page_size_log2),
                        });
                    }
                    found.imports.push(Import {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                    });
                }
            }
            Payload::MemorySection(section) => {
                for ty in section {
                    let ty = ty.context("reading a memory type")?;
                    found.memories.push(DeclaredMemory {
                        imported: false,
                        initial_bytes: bytes(ty.initial, ty.page_size_log2),
                    });
                }
            }
            // Imports and memories come before the code: nothing after matters here.
            Payload::CodeSectionStart { .. } => break,
            _ => {}
        }
    }
    Ok(found)
}

fn bytes(pages: u64, page_size_log2: Option<u32>) -> u64 {
    let page = page_size_log2.map_or(WASM_PAGE, |log2| 1u64 << log2.min(16));
    pages.saturating_mul(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: the header, an import section importing a function `wasi_snapshot_preview1`
    /// `fd_write` (type 0) and a memory `env` `m` of `imported` pages, and a memory section
    /// with one memory of `defined` pages.
    fn module(imported: u8, defined: u8) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // type section: one type, () -> ()
        m.extend([1, 4, 1, 0x60, 0, 0]);
        let import = [
            &[2u8, 22][..],
            b"wasi_snapshot_preview1",
            &[8],
            b"fd_write",
            &[0, 0],
            &[3],
            b"env",
            &[1],
            b"m",
            &[2, 0, imported],
        ]
        .concat();
        m.extend([2, import.len() as u8]);
        m.extend(import);
        // memory section: one memory, limits with a maximum: flag 1, min, max
        m.extend([5, 4, 1, 1, defined, 100]);
        m
    }

    #[test]
    fn finds_imports_and_memories() {
        let found = inspect(&module(2, 3)).unwrap();
        assert_eq!(
            found.imports,
            [
                Import {
                    module: "wasi_snapshot_preview1".into(),
                    name: "fd_write".into()
                },
                Import {
                    module: "env".into(),
                    name: "m".into()
                },
            ]
        );
        assert_eq!(
            found.memories,
            [
                DeclaredMemory {
                    imported: true,
                    initial_bytes: 2 * WASM_PAGE
                },
                DeclaredMemory {
                    imported: false,
                    initial_bytes: 3 * WASM_PAGE
                },
            ]
        );
    }

    #[test]
    fn empty_and_broken_modules() {
        assert_eq!(inspect(b"\0asm\x01\0\0\0").unwrap(), Inspected::default());
        assert!(inspect(b"\0asm\x01\0\0\0\x05\x09").is_err());
    }
}
