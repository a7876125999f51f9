//! A large guest: several MB of generated code (see build.rs), one function of which runs.
//! Prints `big: N functions, f(K) = V` and exits 0; `big K` picks function K mod N.

use std::io::Write;

include!(concat!(env!("OUT_DIR"), "/funcs.rs"));

fn main() {
    let k: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let v = FUNCS[(k % FUNCS.len() as u64) as usize](k);
    let line = format!("big: {} functions, f({k}) = {v:#x}\n", FUNCS.len());
    if std::io::stdout().write_all(line.as_bytes()).is_err() {
        std::process::exit(1);
    }
}
