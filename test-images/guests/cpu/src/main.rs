//! CPU-bound guest for `scripts/bench`: hashes MiB mebibytes (argument 1, default 48) as a
//! chain of SHA-256 digests over one 64 KiB buffer (each digest is mixed into the buffer
//! before the next round, so no round can be skipped or reordered), then prints
//!
//!     cpu: sha256 chain MIB MiB digest HEX elapsed MS ms
//!
//! with the time measured inside the guest (`std::time::Instant`, around the hashing only).
//! The same source runs natively (the bench builds it for the host) and as wasm32-wasip1;
//! the digest is the same everywhere for the same MiB. Plain integer code, no dependencies.

use std::time::Instant;

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const BUF: usize = 64 * 1024;

fn compress(h: &mut [u32; 8], block: &[u8]) {
    let mut w = [0u32; 64];
    for (i, c) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        hh = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
        *x = x.wrapping_add(y);
    }
}

/// SHA-256 of `data` (whose length is a multiple of 64 bytes, as the buffer's is).
fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h = H0;
    for block in data.chunks_exact(64) {
        compress(&mut h, block);
    }
    let mut pad = [0u8; 64];
    pad[0] = 0x80;
    pad[56..].copy_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    compress(&mut h, &pad);
    let mut out = [0u8; 32];
    for (o, x) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn main() {
    let mib: u64 = match std::env::args().nth(1) {
        None => 48,
        Some(a) => match a.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: cpu [MIB]  (a whole number of MiB to hash, at least 1)");
                std::process::exit(2);
            }
        },
    };
    // A deterministic buffer (xorshift64), the same on every platform.
    let mut buf = vec![0u8; BUF];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let rounds = mib * (1 << 20) / BUF as u64;
    let t0 = Instant::now();
    let mut digest = [0u8; 32];
    for _ in 0..rounds {
        for (b, d) in buf.iter_mut().zip(digest) {
            *b ^= d;
        }
        digest = sha256(&buf);
    }
    let elapsed = t0.elapsed();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "cpu: sha256 chain {mib} MiB digest {hex} elapsed {:.3} ms",
        elapsed.as_secs_f64() * 1000.0
    );
}
