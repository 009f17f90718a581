//! Pause-loop exiting for threads interrupted while spinning inside an enclave.
//!
//! Threads spinning on a lock inside the enclave take the CPUs from the thread that holds
//! it (Intel's enclave memory manager holds its lock across OCALLs into the driver, whose
//! IPIs then interrupt every spinner). When an interrupt's AEX finds the interrupted code
//! spinning (a PAUSE at the interrupted instruction or just before it), the thread stays off
//! its CPU for a while before ERESUME, as hypervisors deschedule a spinning vCPU; a thread
//! that keeps spinning backs off longer each time, up to [`MAX_BACKOFF`].
//!
//! (Emulated timer interrupts, a CPU-time timer per thread sending the IPI signal, were
//! tried and dropped: a signal that lands while the thread is in a blocking system call of
//! the host makes some of them fail with EINTR, which hardware's timer never does.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::engine::Engine;
use crate::sys;
use crate::thread::ThreadState;

/// The first pause-loop backoff; each time the thread is found spinning again it doubles.
pub const MIN_BACKOFF: Duration = Duration::from_micros(100);
/// The longest: with many threads spinning on few CPUs, each must stay off long enough for the rest of
/// them together to leave a CPU to the lock holder.
pub const MAX_BACKOFF: Duration = Duration::from_millis(20);

/// After an interrupt's AEX of enclave code at `rip`: stays off the CPU if that code was
/// spinning, longer each time it is found spinning again.
pub fn after_interrupt(engine: &Engine, st: &ThreadState, rip: u64) {
    if !spinning_at(engine, rip) {
        st.spin_backoff_us.store(0, Ordering::Relaxed);
        return;
    }
    let previous = Duration::from_micros(st.spin_backoff_us.load(Ordering::Relaxed).into());
    let backoff = (previous * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
    st.spin_backoff_us.store(backoff.as_micros() as u32, Ordering::Relaxed);
    sys::sleep(backoff);
}

const PAUSE: [u8; 2] = [0xf3, 0x90];

/// Whether enclave code interrupted at `rip` is spinning: a PAUSE at `rip` or in the few
/// bytes before it (an interrupt lands after the long PAUSE, an instruction or two on in
/// its loop). Read through the EPC: the enclave's own mapping may not be readable.
fn spinning_at(engine: &Engine, rip: u64) -> bool {
    const BEFORE: u64 = 12;
    let mut bytes = [0u8; BEFORE as usize + 2];
    engine.read_mapped(rip.wrapping_sub(BEFORE), &mut bytes) && bytes.windows(2).any(|w| w == PAUSE)
}
