//! Generates `FUNCS` functions of `STEPS` arithmetic/branching steps each into
//! `$OUT_DIR/funcs.rs`: real code for the engine to compile (not a data blob, which an
//! ahead-of-time compiler copies through almost for free). Every function is reachable
//! through one function-pointer table, so none is dropped, and their constants differ, so
//! none is merged. Deterministic: the same source every build.

use std::fmt::Write as _;

/// About 5 MB of Wasm code (opt-level 1, see ../Cargo.toml).
const FUNCS: usize = 1500;
const STEPS: usize = 60;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut src = String::new();
    for f in 0..FUNCS {
        writeln!(src, "#[inline(never)]\nfn f{f}(x: u64) -> u64 {{").unwrap();
        writeln!(src, "    let mut a = x ^ {:#x};", rng.next()).unwrap();
        writeln!(
            src,
            "    let mut b = x.rotate_left({}) ^ {:#x};",
            rng.below(63) + 1,
            rng.next()
        )
        .unwrap();
        for _ in 0..STEPS {
            let (c, s) = (rng.next() | 1, rng.below(63) + 1);
            match rng.below(6) {
                0 => writeln!(src, "    a = a.wrapping_mul({c:#x}) ^ (b >> {s});"),
                1 => writeln!(src, "    b = b.rotate_left({s}).wrapping_add(a ^ {c:#x});"),
                2 => writeln!(
                    src,
                    "    if a & {:#x} == 0 {{ a = a.wrapping_add(b ^ {c:#x}); }} else {{ b ^= a.wrapping_mul({c:#x}); }}",
                    1u64 << rng.below(64)
                ),
                3 => writeln!(
                    src,
                    "    for i in 0..(b & 3) {{ a = a.rotate_right({s}) ^ i.wrapping_mul({c:#x}); }}"
                ),
                4 => writeln!(
                    src,
                    "    match (a >> {s}) & 3 {{ 0 => b = b.wrapping_sub({c:#x}), 1 => a ^= b << 3, 2 => b = b.wrapping_mul(a | 1), _ => a = a.wrapping_add({c:#x}) }}"
                ),
                _ => writeln!(src, "    a = a.wrapping_add(b.count_ones() as u64 * {c:#x}); b ^= a >> {s};"),
            }
            .unwrap();
        }
        writeln!(src, "    a ^ b\n}}").unwrap();
    }
    writeln!(src, "pub static FUNCS: [fn(u64) -> u64; {FUNCS}] = [").unwrap();
    for f in 0..FUNCS {
        writeln!(src, "    f{f},").unwrap();
    }
    writeln!(src, "];").unwrap();
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("funcs.rs"), src).expect("writing funcs.rs");
    println!("cargo:rerun-if-changed=build.rs");
}
