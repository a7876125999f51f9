//! Just enough of the WebAssembly binary formats for the Wasm OCI artifact
//! config: is the file a core module or a component, and what are a
//! component's top-level import and export names.

use anyhow::{bail, Context, Result};

const MAGIC: &[u8; 4] = b"\0asm";
const SECTION_IMPORT: u8 = 10;
const SECTION_EXPORT: u8 = 11;

/// What a `.wasm` file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (WASI preview 1).
    Module,
    /// A component (WASI preview 2) with its top-level import/export names.
    Component {
        imports: Vec<String>,
        exports: Vec<String>,
    },
}

/// Classifies `bytes` by its preamble and, for a component, reads the names
/// of its top-level imports and exports (nested modules/components skipped).
pub fn inspect(bytes: &[u8]) -> Result<WasmKind> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        bail!("not a WebAssembly binary (no \\0asm header)");
    }
    // After the magic: a u16 version and a u16 layer, little endian. Core
    // modules are version 1 layer 0; components are layer 1.
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match (layer, version) {
        (0, 1) => Ok(WasmKind::Module),
        (1, _) => {
            let (imports, exports) =
                component_names(&bytes[8..]).context("reading the component's imports/exports")?;
            Ok(WasmKind::Component { imports, exports })
        }
        _ => bail!("unsupported WebAssembly version {version} layer {layer}"),
    }
}

fn component_names(body: &[u8]) -> Result<(Vec<String>, Vec<String>)> {
    let mut reader = Reader {
        bytes: body,
        pos: 0,
    };
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    while !reader.at_end() {
        let id = reader.byte()?;
        let size = reader.u32()? as usize;
        let contents = reader.take(size)?;
        let mut section = Reader {
            bytes: contents,
            pos: 0,
        };
        match id {
            SECTION_IMPORT => {
                for _ in 0..section.u32()? {
                    push_unique(&mut imports, section.extern_name()?);
                    section.extern_desc()?;
                }
            }
            SECTION_EXPORT => {
                for _ in 0..section.u32()? {
                    push_unique(&mut exports, section.extern_name()?);
                    section.sort()?;
                    section.u32()?; // index
                    if section.byte()? == 0x01 {
                        section.extern_desc()?; // optional ascribed type
                    }
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

fn push_unique(names: &mut Vec<String>, name: String) {
    if !names.contains(&name) {
        names.push(name);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.pos).context("unexpected end of data")?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .context("unexpected end of data")?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// An unsigned LEB128 u32.
    fn u32(&mut self) -> Result<u32> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return u32::try_from(value).context("integer too large");
            }
        }
        bail!("integer too long")
    }

    /// Skips any LEB128 number (used for signed type indices).
    fn skip_leb(&mut self) -> Result<()> {
        while self.byte()? & 0x80 != 0 {}
        Ok(())
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        Ok(std::str::from_utf8(bytes)
            .context("name is not UTF-8")?
            .to_string())
    }

    /// `importname'` / `exportname'`: a discriminator byte (0x00, or 0x01 in
    /// older binaries) then the name.
    fn extern_name(&mut self) -> Result<String> {
        match self.byte()? {
            0x00 | 0x01 => self.string(),
            b => bail!("unknown name discriminator 0x{b:02x}"),
        }
    }

    /// `sort`: `0x00 <core sort>` or a single byte.
    fn sort(&mut self) -> Result<u8> {
        let b = self.byte()?;
        if b == 0x00 {
            self.byte()?;
        }
        Ok(b)
    }

    /// `externdesc`: a sort followed by its type reference.
    fn extern_desc(&mut self) -> Result<()> {
        match self.sort()? {
            // core module, func, component, instance: a type index
            0x00 | 0x01 | 0x04 | 0x05 => {
                self.u32()?;
            }
            // value: `0x00 <valueidx>` or `0x01 <valtype>`
            0x02 => {
                self.byte()?;
                self.skip_leb()?;
            }
            // type: `0x00 <typeidx>` (eq) or `0x01` (sub resource)
            0x03 => {
                if self.byte()? == 0x00 {
                    self.u32()?;
                }
            }
            b => bail!("unknown extern kind 0x{b:02x}"),
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hand-assembled component: an instance import, a nested (skipped)
    /// core module section and a func export.
    pub(crate) fn tiny_component() -> Vec<u8> {
        let mut c = b"\0asm\x0d\x00\x01\x00".to_vec();
        // core module section holding an empty core module
        c.extend([0x01, 0x08]);
        c.extend(b"\0asm\x01\x00\x00\x00");
        // import section: 1 import "wasi:cli/stdout@0.2.0" (instance, type 0)
        let name = b"wasi:cli/stdout@0.2.0";
        let mut sec = vec![0x01, 0x00, name.len() as u8];
        sec.extend(name);
        sec.extend([0x05, 0x00]);
        c.push(SECTION_IMPORT);
        c.push(sec.len() as u8);
        c.extend(sec);
        // export section: "run" -> func 0, with an ascribed func type 1
        let mut sec = vec![0x01, 0x00, 3];
        sec.extend(b"run");
        sec.extend([0x01, 0x00, 0x01, 0x01, 0x01]);
        c.push(SECTION_EXPORT);
        c.push(sec.len() as u8);
        c.extend(sec);
        c
    }

    #[test]
    fn core_module() {
        assert_eq!(inspect(b"\0asm\x01\0\0\0").unwrap(), WasmKind::Module);
    }

    #[test]
    fn component_names() {
        assert_eq!(
            inspect(&tiny_component()).unwrap(),
            WasmKind::Component {
                imports: vec!["wasi:cli/stdout@0.2.0".into()],
                exports: vec!["run".into()],
            }
        );
    }

    #[test]
    fn bad_input() {
        assert!(inspect(b"").is_err());
        assert!(inspect(b"hello, world").is_err());
        assert!(inspect(b"\0asm\x02\0\0\0").is_err());
        let mut truncated = tiny_component();
        truncated.truncate(truncated.len() - 2);
        assert!(inspect(&truncated).is_err());
    }
}
