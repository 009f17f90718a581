//! Measuring an image with progress on stderr: MRENCLAVE costs a hash per page (and 16 more
//! for a measured page), so a layout of many GiB takes seconds to minutes — a measured
//! 64 GiB stack about as long as SHA-256 over 80 GiB. The count appears once the work has
//! taken [`QUIET_FOR`], so small enclaves print nothing extra, and only on a terminal: a log
//! or a pipe keeps the one-line-per-outcome output of the commands.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use sgxemu_enclave::EnclaveImage;

/// How long measuring runs before progress appears, and how often it is refreshed after.
const QUIET_FOR: Duration = Duration::from_secs(2);

/// MRENCLAVE of `image`, with a progress line on stderr for long work.
pub fn mrenclave(image: &EnclaveImage) -> [u8; 32] {
    if !std::io::stderr().is_terminal() {
        return image.mrenclave();
    }
    let total = image.page_count();
    let started = Instant::now();
    let mut shown = None::<Instant>;
    let mrenclave = image.mrenclave_with_progress(&mut |done| {
        let due = shown.map_or(started.elapsed() >= QUIET_FOR, |at| at.elapsed() >= QUIET_FOR);
        if due {
            let percent = done as f64 * 100.0 / total.max(1) as f64;
            eprint!("\rsgxemu: measuring {done}/{total} pages ({percent:.0}%)   ");
            shown = Some(Instant::now());
        }
    });
    if shown.is_some() {
        eprint!("\r{:80}\r", "");
        let _ = std::io::stderr().flush();
    }
    mrenclave
}
