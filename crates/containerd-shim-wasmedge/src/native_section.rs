//! Native code that arrives inside an image is never trusted.
//!
//! WasmEdge's universal Wasm is a module with machine code in a custom section named
//! `wasmedge`; its loader runs that code in AOT mode, and of several such sections it takes the
//! last one that loads. A module from an image may carry one (made by `wasmedge compile`, or
//! crafted): it would be arbitrary native code outside the sandbox. So before the node compiles
//! a module, every `wasmedge` section is cut out; the only native code an instance ever maps
//! is the one this node's compiler wrote into its own cache.

use std::borrow::Cow;

use anyhow::{Context, Result};
use wasmparser::{Parser, Payload};

/// The custom section WasmEdge keeps native code in.
pub const SECTION: &str = "wasmedge";

/// `wasm` without its `wasmedge` custom sections (borrowed when it has none), and how many
/// were cut.
pub fn strip(wasm: &[u8]) -> Result<(Cow<'_, [u8]>, usize)> {
    let mut cuts = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::CustomSection(section) = payload.context("reading the module's sections")? {
            if section.name() == SECTION {
                cuts.push(section.range());
            }
        }
    }
    if cuts.is_empty() {
        return Ok((Cow::Borrowed(wasm), 0));
    }
    // A custom section's range covers its name and content; the id byte and the LEB128 size
    // come before it. Find the section's start by walking the top-level sections.
    let mut out = Vec::with_capacity(wasm.len());
    out.extend_from_slice(&wasm[..8]);
    let mut offset = 8;
    while offset < wasm.len() {
        let id = wasm[offset];
        let (size, len) = leb128_u32(&wasm[offset + 1..]).context("reading a section size")?;
        let end = offset + 1 + len + size as usize;
        let body = offset + 1 + len;
        let cut = id == 0 && cuts.iter().any(|r| r.start == body && r.end == end);
        if !cut {
            out.extend_from_slice(wasm.get(offset..end).context("a section past the end")?);
        }
        offset = end;
    }
    Ok((Cow::Owned(out), cuts.len()))
}

fn leb128_u32(bytes: &[u8]) -> Result<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().take(5).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    anyhow::bail!("a malformed LEB128 section size")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(name: &str, content: &[u8]) -> Vec<u8> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(content);
        // A two-byte LEB128 size, to cover sizes longer than their minimal encoding.
        let mut s = vec![0u8, (body.len() as u8 & 0x7f) | 0x80, 0];
        s.extend(body);
        s
    }

    fn module(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // type section: one `() -> ()`
        m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]);
        for s in sections {
            m.extend_from_slice(s);
        }
        m
    }

    #[test]
    fn native_sections_are_cut_and_the_rest_kept() {
        let keep = custom("name", b"\x00\x01x");
        let native = custom(SECTION, &[0xAA; 40]);
        let wasm = module(&[native.clone(), keep.clone(), native]);
        let (stripped, cut) = strip(&wasm).unwrap();
        assert_eq!(cut, 2);
        assert_eq!(&*stripped, &module(&[keep])[..]);
        assert!(
            Parser::new(0).parse_all(&stripped).all(|p| p.is_ok()),
            "still a well-formed module"
        );
    }

    #[test]
    fn a_module_without_native_code_is_borrowed() {
        let wasm = module(&[custom("other", b"x")]);
        let (out, cut) = strip(&wasm).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(cut, 0);
    }
}
