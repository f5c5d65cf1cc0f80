//! The physical limit the engine is measured against: a plain memcpy between pre-faulted buffers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The fastest of `tries` copies of `bytes` between two buffers whose pages are all present.
pub fn best_of(bytes: usize, tries: usize) -> Result<Duration> {
    let mut src = prefaulted(bytes, 0x5a)?;
    let mut dst = prefaulted(bytes, 0xa5)?;
    // Make the source differ from page to page, like the workload's memory.
    for (i, chunk) in src.chunks_mut(4096).enumerate() {
        chunk[0] = i.to_le_bytes()[0];
    }
    let mut best = Duration::MAX;
    for _ in 0..tries {
        let start = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// A buffer of `bytes` with every page written (so present), or an error if memory is short.
fn prefaulted(bytes: usize, fill: u8) -> Result<Vec<u8>> {
    let mut buffer = Vec::new();
    buffer
        .try_reserve_exact(bytes)
        .with_context(|| format!("allocating {bytes} bytes for the memcpy measurement"))?;
    buffer.resize(bytes, fill);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_copy_takes_some_time() -> Result<()> {
        let best = best_of(1 << 20, 3)?;
        assert!(
            best > Duration::ZERO && best < Duration::from_secs(5),
            "{best:?}"
        );
        Ok(())
    }
}
