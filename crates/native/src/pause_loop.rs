//! Pause-loop exiting for threads spinning inside an enclave.
//!
//! Threads spinning on a lock inside the enclave take the CPUs from the thread that holds
//! it. With more threads than CPUs a holder that the host preempted waits behind every
//! spinner's time slice: Intel's enclave memory manager, with 50 threads on 2 CPUs, spent
//! minutes so, every thread in the PAUSE loop of a spin lock whose holder was off its CPU.
//! Hardware has the same problem, and hypervisors answer it with pause-loop exiting: a vCPU
//! that keeps executing PAUSE gives its CPU up. So do we, two ways:
//!
//! - With `SGXEMU_PAUSE_EXITING=1` (off by default: each PAUSE then costs a trap, about
//!   2 µs, where a PAUSE takes some 40 ns, which makes waits that count PAUSEs, as Intel's
//!   switchless calls do, far longer), PAUSE in enclave code is patched to trap
//!   ([`crate::patch`]); a PAUSE that follows the thread's previous one within [`GAP`] is a
//!   pause loop, and the thread yields its CPU (the lock holder, if runnable, goes first;
//!   cheap where nothing else waits for the CPU).
//! - An interrupt (the reclaimer's IPI) whose AEX finds the interrupted code spinning (a
//!   PAUSE at the interrupted instruction or just before it) keeps the thread off its CPU
//!   for a while before ERESUME, longer each time it is found spinning again, up to
//!   [`MAX_BACKOFF`].
//!
//! (Emulated timer interrupts, a CPU-time timer per thread sending the IPI signal, were
//! tried and dropped: a signal that lands while the thread is in a blocking system call of
//! the host makes some of them fail with EINTR, which hardware's timer never does. Sleeping
//! from the first PAUSE of a loop, up to 20 ms after an AEX, was tried too: a lock holder
//! waiting a moment in a PAUSE loop for an inner lock then slept while the others spun on
//! the outer one. Sleeping 50 µs at each PAUSE once a loop had lasted 1 ms, which helped
//! while a trapped PAUSE cost 10–15 µs (a `ud2` in a KVM guest), was dropped once it cost
//! 2 µs (`hlt`): yielding alone then ran Intel's EMM tests with 50 threads on 2 CPUs in
//! 4–6 s against 10–14 s, and the switchless sample in 24 s against 209 s.)

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

/// PAUSEs closer together than this belong to one loop (a trapped PAUSE costs a few µs).
pub const GAP: Duration = Duration::from_micros(50);

/// A PAUSE of enclave code (a patched one): in a pause loop the thread yields its CPU.
pub fn on_pause(st: &ThreadState) {
    let now = sys::monotonic_ns();
    let last = st.last_pause_ns.swap(now, Ordering::Relaxed);
    if now.saturating_sub(last) <= GAP.as_nanos() as u64 {
        sys::sched_yield();
    }
}

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

/// Whether enclave code interrupted at `rip` is spinning: a PAUSE (or a patched one) at
/// `rip` or in the few bytes before it (an interrupt lands after the long PAUSE, an
/// instruction or two on in its loop). Read through the EPC: the enclave's own mapping may
/// not be readable.
fn spinning_at(engine: &Engine, rip: u64) -> bool {
    const BEFORE: u64 = 12;
    let start = rip.wrapping_sub(BEFORE);
    let mut bytes = [0u8; BEFORE as usize + 2];
    engine.read_mapped(start, &mut bytes)
        && bytes.windows(2).enumerate().any(|(i, w)| {
            w == PAUSE || (w[0] == crate::patch::TRAP && crate::patch::is_pause(engine, start + i as u64))
        })
}
