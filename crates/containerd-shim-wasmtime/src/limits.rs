//! The policy's memory budget as a Wasmtime resource limiter: linear memories and tables of
//! the guest together may not grow past it; a refused growth makes `memory.grow` return -1
//! (the guest's allocator sees out-of-memory) and is remembered to explain a later trap.

use wasm_shim_core::policy::Limits;

pub struct GuestLimiter {
    budget: Option<usize>,
    used: usize,
    refused: Option<usize>,
}

/// Wasmtime keeps one pointer per table element.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl GuestLimiter {
    pub fn new(limits: &Limits) -> Self {
        GuestLimiter {
            budget: limits
                .guest_memory
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
            used: 0,
            refused: None,
        }
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let wanted = self.used.saturating_sub(current).saturating_add(desired);
        match self.budget {
            Some(budget) if wanted > budget => {
                self.refused = Some(wanted);
                false
            }
            _ => {
                self.used = wanted;
                true
            }
        }
    }

    /// Why the guest may have failed, if the limit was hit.
    pub fn explain(&self) -> Option<String> {
        let (wanted, budget) = (self.refused?, self.budget?);
        let pages = budget as u64 / wasm_shim_core::policy::WASM_PAGE;
        Some(wasm_shim_core::engine::out_of_memory(
            pages,
            &format!(
                "; the guest asked for {} MiB of linear memory and tables",
                wanted.div_ceil(1 << 20)
            ),
        ))
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current * TABLE_ELEMENT_BYTES, desired * TABLE_ELEMENT_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(budget: Option<u64>) -> GuestLimiter {
        GuestLimiter::new(&Limits {
            memory_limit: None,
            guest_memory: budget,
            time_limit: None,
            max_open_files: 64,
        })
    }

    #[test]
    fn growth_is_summed_and_bounded() {
        let mut l = limiter(Some(10 << 20));
        assert!(l.grow(0, 4 << 20));
        assert!(l.grow(0, 4 << 20), "a second memory");
        assert!(!l.grow(4 << 20, 8 << 20), "would make 12 MiB");
        let why = l.explain().unwrap();
        assert!(
            why.starts_with("out of memory: memory page limit of 160 pages (10 MiB)"),
            "{why}"
        );
        assert!(why.contains("asked for 12 MiB"), "{why}");
        assert!(l.grow(4 << 20, 6 << 20), "exactly 10 MiB");
    }

    #[test]
    fn no_budget_allows_everything() {
        let mut l = limiter(None);
        assert!(l.grow(0, usize::MAX / 2));
        assert!(l.explain().is_none());
    }
}
