//! Timer interrupts for threads that run enclave code, and pause-loop exiting.
//!
//! On hardware the timer interrupts every logical processor a few hundred times a second,
//! and each interrupt of enclave code is an AEX. A preempted thread has therefore left the
//! enclave, so a tracking epoch never waits for it. Here a thread keeps running enclave code
//! natively until a signal comes, and a preempted one is still "inside" for the processor
//! model: the driver's IPIs wait until it is scheduled again. Worse, threads spinning on a
//! lock inside the enclave take the CPUs from the thread that holds it (Intel's enclave
//! memory manager holds its lock across OCALLs into the driver).
//!
//! So every thread that has entered an enclave gets a timer on its own CPU time (it ticks
//! only while the thread runs) that sends it the IPI signal every [`TICK`]: an AEX if it is
//! running enclave code, as the timer interrupt is on hardware. If the interrupted code was
//! spinning (a PAUSE at the interrupted instruction or just before it), the thread stays off
//! its CPU for a while before ERESUME, as hypervisors deschedule a spinning vCPU (pause-loop
//! exiting); a thread that keeps spinning backs off longer each time, up to [`MAX_BACKOFF`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::engine::Engine;
use crate::platform;
use crate::sys;
use crate::thread::ThreadState;

/// CPU time between two timer interrupts of one thread.
pub const TICK: Duration = Duration::from_millis(1);
/// The first pause-loop backoff; each time the thread is found spinning again it doubles.
pub const MIN_BACKOFF: Duration = Duration::from_micros(100);
/// The longest: with many threads spinning on few CPUs, each must stay off long enough for the rest of
/// them together to leave a CPU to the lock holder.
pub const MAX_BACKOFF: Duration = Duration::from_millis(20);
const NO_TIMER: i32 = -1;

/// Arms the calling thread's timer, once (it needs a system call: not from enclave mode).
pub fn arm(st: &ThreadState) {
    if st.cpu_timer.load(Ordering::Acquire) != NO_TIMER {
        return;
    }
    // SAFETY: an all-zero sigevent is valid; the fields the kernel reads are set below.
    let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
    event.sigev_notify = libc::SIGEV_THREAD_ID;
    event.sigev_signo = platform::kick_signal();
    event.sigev_notify_thread_id = st.tid;
    let mut id: libc::c_int = NO_TIMER;
    // SAFETY: `event` and `id` are valid for the call; the timer is the kernel's, named by an int.
    let created = unsafe {
        libc::syscall(libc::SYS_timer_create, libc::CLOCK_THREAD_CPUTIME_ID, &event as *const libc::sigevent, &mut id)
    } == 0;
    if !created {
        return;
    }
    let period = libc::timespec { tv_sec: 0, tv_nsec: TICK.as_nanos() as libc::c_long };
    let spec = libc::itimerspec { it_interval: period, it_value: period };
    // SAFETY: `id` names the timer just created; `spec` is valid; no old value is asked for.
    unsafe {
        libc::syscall(
            libc::SYS_timer_settime,
            id,
            0,
            &spec as *const libc::itimerspec,
            std::ptr::null_mut::<libc::itimerspec>(),
        )
    };
    st.cpu_timer.store(id, Ordering::Release);
}

/// Deletes the thread's timer (the thread is going away).
pub fn disarm(st: &ThreadState) {
    let id = st.cpu_timer.swap(NO_TIMER, Ordering::AcqRel);
    if id != NO_TIMER {
        // SAFETY: `id` names this thread's timer; deleting it has no other effect.
        unsafe { libc::syscall(libc::SYS_timer_delete, id) };
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

/// Whether enclave code interrupted at `rip` is spinning: a PAUSE at `rip` or in the few
/// bytes before it (an interrupt lands after the long PAUSE, an instruction or two on in
/// its loop). Read through the EPC: the enclave's own mapping may not be readable.
fn spinning_at(engine: &Engine, rip: u64) -> bool {
    const BEFORE: u64 = 12;
    let mut bytes = [0u8; BEFORE as usize + 2];
    for (i, byte) in bytes.iter_mut().enumerate() {
        let at = rip.wrapping_sub(BEFORE).wrapping_add(i as u64);
        let Some(page) = engine.space.epc_at(at) else { return false };
        engine.processor.read_epc(page, (at % 4096) as usize, std::slice::from_mut(byte));
    }
    bytes.windows(2).any(|w| w == PAUSE)
}
