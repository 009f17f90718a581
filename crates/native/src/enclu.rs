//! What the processor does when enclave code, or a program entering it, executes ENCLU or
//! raises an exception — carried out on a signal frame: the leaf on the processor model,
//! AEX into the SSA, and the kernel's part (its #PF handler, the vDSO exception fixup, or a
//! signal for the program).

use std::sync::atomic::Ordering;

use sgxemu_arch::{Enclu, PfErrorCode, Vector};
use sgxemu_cpu::{AccessKind, AexEvent, EventKind, Exception, Regs};

use crate::context::Frame;
use crate::engine::Engine;
use crate::space::Resolution;
use crate::thread::{self, ThreadState};
use crate::vdso::{self, SoftFrame, frame};
use crate::{patch, pause_loop, signals, sys, xfeatures};

/// What a handler should do after the emulator looked at a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: return from the handler (the frame holds the state to resume).
    Resume,
    /// Deliver this signal to the program's own handler, with the (edited) frame.
    Signal(libc::c_int),
}

/// An exception as the architecture reports it.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// Vector.
    pub vector: u8,
    /// Error code.
    pub code: u32,
    /// Faulting address (#PF).
    pub addr: u64,
}

impl Fault {
    fn from_exception(e: Exception) -> Fault {
        match e {
            Exception::Pf { addr, code } => Fault { vector: Vector::Pf as u8, code: code.bits(), addr },
            other => Fault { vector: other.vector() as u8, code: 0, addr: 0 },
        }
    }
}

/// The signal the kernel sends for an exception vector.
fn signal_for(vector: u8) -> libc::c_int {
    match vector {
        0 | 16 | 19 => libc::SIGFPE,
        1 | 3 => libc::SIGTRAP,
        6 => libc::SIGILL,
        12 | 17 => libc::SIGBUS,
        _ => libc::SIGSEGV,
    }
}

/// The access a #PF error code describes.
pub fn access_kind(code: u64) -> AccessKind {
    if code & u64::from(PfErrorCode::I.bits()) != 0 {
        AccessKind::Execute
    } else if code & u64::from(PfErrorCode::W.bits()) != 0 {
        AccessKind::Write
    } else {
        AccessKind::Read
    }
}

fn regs_with_bases(frame: &Frame, fsbase: u64, gsbase: u64) -> Regs {
    Regs { fsbase, gsbase, ..frame.regs() }
}

/// How [`enclu_from_outside`] ended without an exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ran {
    /// The leaf ran.
    Done,
    /// A signal waits for the thread while the driver asks it to retry: the leaf has not
    /// run, and the thread goes back to its ENCLU so the signal is delivered first.
    Interrupted,
}

/// Runs ENCLU for a thread outside enclave mode (EENTER/ERESUME by the program or the
/// vDSO's AEP), resolving not-present #PFs on the TCS or SSA through the driver's fault
/// handler and re-executing, as the kernel's fault path does. In a signal handler,
/// `caller_mask` is the mask the thread had at the trap: as the kernel returns to user
/// mode after a fault it resolved with a retry, signals the program does not block end the
/// retries ([`Ran::Interrupted`]), so a thread stuck on EPC pressure stays killable and its
/// handlers run.
fn enclu_from_outside(
    engine: &Engine,
    st: &ThreadState,
    regs: &mut Regs,
    caller_mask: Option<&libc::sigset_t>,
) -> Result<Ran, Exception> {
    // A page the leaf needs (TCS, SSA) may be written out, or be on its way back, many
    // times over under EPC pressure; the kernel's fault handler retries as long as it must.
    // Bounded here only so a model/space disagreement cannot spin forever.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
    let mut started = None;
    loop {
        let mut attempt = *regs;
        let result = {
            let _translations = engine.space.translations();
            engine.processor.enclu(&mut st.cpus().lp, &mut attempt, &*engine.space)
        };
        match result {
            Ok(()) => {
                *regs = attempt;
                return Ok(Ran::Done);
            }
            Err(Exception::Pf { addr, code })
                if !code.contains(PfErrorCode::SGX)
                    && started.get_or_insert_with(std::time::Instant::now).elapsed() < PATIENCE =>
            {
                match engine.space.fault(&mut st.cpus().kcpu, addr, access_kind(u64::from(code.bits()))) {
                    // `Present`: another thread mapped it meanwhile; the leaf decides again.
                    Resolution::Retry | Resolution::Present => {
                        if caller_mask.is_some_and(signal_waits) {
                            return Ok(Ran::Interrupted);
                        }
                        std::thread::yield_now();
                    }
                    other => {
                        if signals::tracing() {
                            sys::stderr_line(&format!("sgxemu:   ENCLU from outside: {other:?} at {addr:#x}\n"));
                        }
                        return Err(Exception::Pf { addr, code });
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a signal is pending that `mask` (the program's) does not block.
fn signal_waits(mask: &libc::sigset_t) -> bool {
    let Some(pending) = sys::pending_signals() else { return false };
    (1..libc::SIGRTMAX()).any(|sig| {
        // SAFETY: sigismember only reads the sets, for a valid signal number.
        unsafe { libc::sigismember(&pending, sig) == 1 && libc::sigismember(mask, sig) != 1 }
    })
}

/// The thread just entered (EENTER or ERESUME succeeded): async signals wait while enclave
/// code runs, and the host's mask comes back at the exit.
fn entered(st: &ThreadState, frame: &mut Frame, regs: &Regs) {
    st.enclave_fs.store(regs.fsbase, Ordering::Relaxed);
    st.enclave_gs.store(regs.gsbase, Ordering::Relaxed);
    st.host_mask.set(frame.sigmask());
    frame.set_sigmask(signals::enclave_mask(&frame.sigmask()));
    if let Some(stack) = thread::alt_stack(st) {
        frame.set_altstack(stack);
    }
    st.in_enclave.store(true, Ordering::Release);
}

/// SIGILL at an ENCLU. `enclave_fs`/`enclave_gs` are the bases the thread had at the
/// signal (the handler already switched to the host's).
pub fn on_enclu(engine: &Engine, st: &ThreadState, frame: &mut Frame, enclave_fs: u64, enclave_gs: u64) -> Outcome {
    enclu_again(engine, st, frame, enclave_fs, enclave_gs, 0)
}

/// [`on_enclu`] for the `depth`-th time in one handler (a leaf whose fault the driver just
/// resolved runs again at once, a bounded number of times; after that it traps again).
fn enclu_again(
    engine: &Engine,
    st: &ThreadState,
    frame: &mut Frame,
    enclave_fs: u64,
    enclave_gs: u64,
    depth: u32,
) -> Outcome {
    let inside = st.cpus().lp.in_enclave();
    let mut regs = if inside {
        regs_with_bases(frame, enclave_fs, enclave_gs)
    } else {
        regs_with_bases(frame, st.host_fs.load(Ordering::Relaxed), st.host_gs.load(Ordering::Relaxed))
    };
    let leaf = Enclu::try_from(regs.rax as u32).ok();
    if !inside {
        if leaf == Some(Enclu::Eenter) || leaf == Some(Enclu::Eresume) {
            st.host_fs.store(regs.fsbase, Ordering::Relaxed);
            st.host_gs.store(regs.gsbase, Ordering::Relaxed);
        }
        let tcs = regs.rbx;
        return match enclu_from_outside(engine, st, &mut regs, Some(&frame.sigmask())) {
            // Back to the ENCLU, untouched: it runs again once the signal is handled.
            Ok(Ran::Interrupted) => Outcome::Resume,
            Ok(Ran::Done) => {
                if leaf == Some(Enclu::Eenter) {
                    patch::prepare(engine, &st.cpus().lp, tcs);
                }
                frame.set_regs(&regs);
                if leaf == Some(Enclu::Eresume) {
                    frame.load_xstate(&st.cpus().lp.xsave);
                }
                if st.cpus().lp.in_enclave() {
                    entered(st, frame, &regs);
                }
                Outcome::Resume
            }
            Err(e) => outside_exception(frame, Fault::from_exception(e)),
        };
    }
    let before = regs;
    match engine.processor.enclu(&mut st.cpus().lp, &mut regs, &*engine.space) {
        Ok(()) => {
            frame.set_regs(&regs);
            if !st.cpus().lp.in_enclave() {
                // EEXIT: back to the host's signal mask (FS is the host's already).
                st.soft_frame.store(0, Ordering::Release);
                st.in_enclave.store(false, Ordering::Release);
                frame.set_sigmask(st.host_mask.get());
            }
            Outcome::Resume
        }
        Err(e) => {
            let fault = Fault::from_exception(e);
            let needs_driver =
                matches!(e, Exception::Pf { code, .. } if !code.contains(PfErrorCode::SGX | PfErrorCode::P));
            let kind = access_kind(u64::from(fault.code));
            let outcome = enclave_exception(engine, st, frame, before, fault, needs_driver.then_some(kind));
            // Resolved and resumed: the thread is back at this ENCLU, in enclave mode. Run
            // it again now rather than taking a second #UD for the same instruction.
            if needs_driver && depth < 4 && outcome == Outcome::Resume && st.in_enclave.load(Ordering::Acquire) {
                let fs = st.enclave_fs.load(Ordering::Relaxed);
                let gs = st.enclave_gs.load(Ordering::Relaxed);
                return enclu_again(engine, st, frame, fs, gs, depth + 1);
            }
            outcome
        }
    }
}

/// A #PF (SIGSEGV with trap 14) raised by enclave code at `addr`.
pub fn on_enclave_page_fault(
    engine: &Engine,
    st: &ThreadState,
    frame: &mut Frame,
    enclave_fs: u64,
    enclave_gs: u64,
    addr: u64,
) -> Outcome {
    let regs = regs_with_bases(frame, enclave_fs, enclave_gs);
    let host_code = frame.err();
    let kind = access_kind(host_code);
    let (resolution, found) = engine.space.classify(addr, kind);
    if resolution == Resolution::Retry
        && let Some((encl, _)) = &found
        && engine.space.foreign_in_elrange(&st.cpus().lp, addr, encl)
    {
        // Another enclave's page inside this one's ELRANGE: the kernel maps it and the
        // retried access fails the EPCM's owner check (spec §6.1 step 3).
        let fault =
            Fault { vector: Vector::Pf as u8, code: (PfErrorCode::P | PfErrorCode::SGX | kind.pf_bits()).bits(), addr };
        return enclave_exception(engine, st, frame, regs, fault, None);
    }
    if crate::signals::tracing() {
        sys::stderr_line(&format!("sgxemu:   {resolution:?} at {addr:#x}\n"));
    }
    match resolution {
        Resolution::Present => match engine.processor.check_access(&st.cpus().lp, &*engine.space, addr, kind) {
            // The host protection lagged behind the EPCM: catch up and retry.
            Ok(_) => {
                engine.space.refresh_addr(addr);
                Outcome::Resume
            }
            Err(e) => {
                if crate::signals::tracing() {
                    let epc = engine.space.epc_at(addr);
                    let view = epc.map(|p| engine.processor.epcm_view(p));
                    sys::stderr_line(&format!("sgxemu:   EPCM fault at {addr:#x}: {e:?} {view:?}\n"));
                }
                enclave_exception(engine, st, frame, regs, Fault::from_exception(e), None)
            }
        },
        Resolution::Retry => {
            let fault = Fault { vector: Vector::Pf as u8, code: kind.pf_bits().bits(), addr };
            enclave_exception(engine, st, frame, regs, fault, Some(kind))
        }
        Resolution::AccessError => {
            // The VMA forbids the access: an ordinary #PF, with P if a PTE maps the page.
            let present = engine.space.epc_at(addr).map_or(PfErrorCode::empty(), |_| PfErrorCode::P);
            let fault = Fault { vector: Vector::Pf as u8, code: (kind.pf_bits() | present).bits(), addr };
            enclave_exception(engine, st, frame, regs, fault, None)
        }
        _ => {
            let fault = Fault { vector: Vector::Pf as u8, code: host_code as u32, addr };
            enclave_exception(engine, st, frame, regs, fault, None)
        }
    }
}

/// A trap that stands for a patched XSAVE-family instruction (see [`crate::xfeatures`]):
/// carried out on the frame's state, or its exception raised as the instruction's own.
pub fn on_xfeature(
    engine: &Engine,
    st: &ThreadState,
    frame: &mut Frame,
    enclave_fs: u64,
    enclave_gs: u64,
    insn: &iced_x86::Instruction,
) -> Outcome {
    let before = regs_with_bases(frame, enclave_fs, enclave_gs);
    let mut regs = before;
    let result = match frame.xsave_area() {
        Some(area) => xfeatures::emulate(engine, &st.cpus().lp, &mut regs, area, insn),
        None => Err(Exception::Gp.into()),
    };
    match result {
        Ok(()) => {
            frame.set_regs(&regs);
            Outcome::Resume
        }
        Err(raised) => {
            let fault = Fault::from_exception(raised.exception);
            enclave_exception(engine, st, frame, before, fault, raised.access)
        }
    }
}

/// A trap that stands for a patched PAUSE ([`crate::pause_loop`]).
pub fn on_pause(st: &ThreadState, frame: &mut Frame, insn: &iced_x86::Instruction) -> Outcome {
    frame.set_rip(frame.rip().wrapping_add(insn.len() as u64));
    pause_loop::on_pause(st);
    Outcome::Resume
}

/// Any other exception enclave code raised (vector from the kernel's trap number).
pub fn on_enclave_trap(
    engine: &Engine,
    st: &ThreadState,
    frame: &mut Frame,
    enclave_fs: u64,
    enclave_gs: u64,
) -> Outcome {
    let fault = Fault { vector: frame.trapno() as u8, code: frame.err() as u32, addr: 0 };
    enclave_fault(engine, st, frame, enclave_fs, enclave_gs, fault)
}

/// CPUID executed by enclave code (seen only with CPUID faulting): #UD, as on SGX.
pub fn on_enclave_ud(
    engine: &Engine,
    st: &ThreadState,
    frame: &mut Frame,
    enclave_fs: u64,
    enclave_gs: u64,
) -> Outcome {
    enclave_fault(engine, st, frame, enclave_fs, enclave_gs, Fault { vector: Vector::Ud as u8, code: 0, addr: 0 })
}

/// Enclave-mode code found running outside ELRANGE (see [`crate::isolation`]): the #GP(0)
/// the processor raises for the fetch, as the enclave's exception at the frame's RIP.
pub fn on_fetch_outside(
    engine: &Engine,
    st: &ThreadState,
    frame: &mut Frame,
    enclave_fs: u64,
    enclave_gs: u64,
) -> Outcome {
    crate::stats::count(&crate::stats::FETCHES_OUTSIDE);
    enclave_fault(engine, st, frame, enclave_fs, enclave_gs, Fault { vector: Vector::Gp as u8, code: 0, addr: 0 })
}

/// AEX for `fault` at the frame's enclave state, then its delivery (nothing for the
/// driver to resolve).
fn enclave_fault(engine: &Engine, st: &ThreadState, frame: &mut Frame, fs: u64, gs: u64, fault: Fault) -> Outcome {
    let regs = regs_with_bases(frame, fs, gs);
    enclave_exception(engine, st, frame, regs, fault, None)
}

/// An interrupt (the driver's IPI) while enclave code runs: AEX to the AEP, whose ERESUME
/// continues the enclave after the kernel's work.
/// Returns whether it took the AEX (the logical processor was in enclave mode).
pub fn on_interrupt(engine: &Engine, st: &ThreadState, frame: &mut Frame, enclave_fs: u64, enclave_gs: u64) -> bool {
    if crate::isolation::interrupted_outside(&st.cpus().lp, frame.rip()) {
        // The enclave's code left ELRANGE unseen since: its #GP comes first. A program
        // with its own AEP gets the SIGSEGV once this handler returns.
        if let Outcome::Signal(sig) = on_fetch_outside(engine, st, frame, enclave_fs, enclave_gs) {
            let _ = sys::tgkill(st.tid, sig);
        }
        return true;
    }
    // In the emulator's code that finishes a software EENTER: on hardware EENTER is one
    // instruction, so the interrupt comes at the enclave's first one. That code's frames
    // (below the untrusted stack pointer, where the program's handler at the AEP will put
    // its own frame) are dead from here on.
    let mut regs = match unfinished_entry(st, frame.rip()) {
        Some(entry) => entry,
        None => regs_with_bases(frame, enclave_fs, enclave_gs),
    };
    frame.save_xstate(&mut st.cpus().lp.xsave);
    let exited = engine.processor.aex(&mut st.cpus().lp, &mut regs, AexEvent::interrupt()).is_some();
    if exited {
        st.soft_frame.store(0, Ordering::Release);
        st.in_enclave.store(false, Ordering::Release);
        frame.set_regs(&regs);
        frame.load_xstate(&st.cpus().lp.xsave);
        frame.set_sigmask(st.host_mask.get());
    }
    exited
}

/// The state EENTER left, if `rip` (an interrupt's, in enclave mode) lies in the
/// emulator's code that finishes a software EENTER: the registers of its frame, as the
/// enclave's first instruction gets them, with the enclave's FS and GS bases (the tail may
/// not have loaded them yet).
fn unfinished_entry(st: &ThreadState, rip: u64) -> Option<Regs> {
    let raw = st.soft_frame.load(Ordering::Acquire);
    if raw == 0 || !crate::isolation::finishing_entry(&st.cpus().lp, rip) {
        return None;
    }
    // SAFETY: `soft_eenter` published its frame, which lives on the thread's stack until
    // the vDSO has jumped into the enclave (this handler interrupted it before that, and
    // runs on the emulator's stack, so it is intact), and it is cleared at the next exit.
    let words = unsafe { &(*(raw as *const SoftFrame)).words };
    Some(frame::regs(words, st.enclave_fs.load(Ordering::Relaxed), st.enclave_gs.load(Ordering::Relaxed)))
}

/// Hardware's AEX for an exception in enclave mode, then the kernel: the fault handler
/// for a not-present #PF (`driver_fault`), and if it resolved the fault the AEP's ERESUME
/// at once; otherwise the vDSO fixup or a signal.
fn enclave_exception(
    engine: &Engine,
    st: &ThreadState,
    frame: &mut Frame,
    mut regs: Regs,
    fault: Fault,
    driver_fault: Option<AccessKind>,
) -> Outcome {
    frame.save_xstate(&mut st.cpus().lp.xsave);
    let event = AexEvent {
        kind: EventKind::Exception {
            vector: Vector::try_from(fault.vector).unwrap_or(Vector::Gp),
            error_code: fault.code,
            addr: fault.addr,
        },
    };
    let Some(report) = engine.processor.aex(&mut st.cpus().lp, &mut regs, event) else {
        return Outcome::Signal(signal_for(fault.vector));
    };
    st.soft_frame.store(0, Ordering::Release);
    st.in_enclave.store(false, Ordering::Release);
    frame.set_sigmask(st.host_mask.get());
    let resolution = driver_fault.map(|kind| engine.space.fault(&mut st.cpus().kcpu, fault.addr, kind));
    if crate::signals::tracing() && resolution.is_some_and(|r| r != Resolution::Retry) {
        sys::stderr_line(&format!("sgxemu:   fault at {:#x}: {resolution:?}\n", fault.addr));
    }
    // `Present`: another thread mapped the page meanwhile; the retried access decides.
    if matches!(resolution, Some(Resolution::Retry | Resolution::Present)) {
        crate::stats::count(&crate::stats::DRIVER_FAULTS);
        // Back at the AEP: its ENCLU[ERESUME] continues the enclave.
        let mut resumed = regs;
        return match enclu_from_outside(engine, st, &mut resumed, Some(&frame.sigmask())) {
            // At the AEP, whose ERESUME runs again once the signal is handled.
            Ok(Ran::Interrupted) => {
                frame.set_regs(&regs);
                frame.load_xstate(&st.cpus().lp.xsave);
                Outcome::Resume
            }
            Ok(Ran::Done) => {
                let mask = frame.sigmask();
                frame.set_regs(&resumed);
                frame.load_xstate(&st.cpus().lp.xsave);
                frame.set_sigmask(mask);
                entered(st, frame, &resumed);
                Outcome::Resume
            }
            Err(e) => {
                frame.set_regs(&regs);
                frame.load_xstate(&st.cpus().lp.xsave);
                outside_exception(frame, Fault::from_exception(e))
            }
        };
    }
    frame.set_regs(&regs);
    frame.load_xstate(&st.cpus().lp.xsave);
    let reported = Fault { vector: fault.vector, code: report.error_code, addr: report.cr2 };
    outside_exception(frame, reported)
}

/// An exception at host code (after an AEX: at the AEP): the vDSO's fixup if the AEP is
/// the vDSO's ENCLU, else the program's signal.
fn outside_exception(frame: &mut Frame, fault: Fault) -> Outcome {
    crate::stats::count(&crate::stats::REPORTED_EXCEPTIONS);
    match vdso::get() {
        Some(v) if frame.rip() == v.aep => {
            let mut regs = frame.regs();
            regs.rip = v.handle_exception;
            regs.rdi = u64::from(fault.vector);
            regs.rsi = u64::from(fault.code);
            regs.rdx = fault.addr;
            frame.set_regs(&regs);
            Outcome::Resume
        }
        _ => Outcome::Signal(signal_for(fault.vector)),
    }
}

/// EENTER done in software for the vDSO (see [`crate::vdso`]): the frame holds the
/// registers at its ENCLU; on success it returns them as EENTER leaves them, with FS and GS
/// already switched and async signals blocked.
///
/// # Safety
/// `raw` points to a valid SoftFrame (the vDSO passes one on its stack).
pub unsafe extern "C" fn soft_eenter(raw: *mut SoftFrame) {
    // SAFETY: the vDSO passes a pointer to the SoftFrame on its own stack.
    let words = unsafe { &mut (*raw).words };
    let Some(engine) = Engine::get() else {
        fail(words, Exception::Gp);
        return;
    };
    // EENTER is one instruction: no handler of the program may run in the middle of it.
    // One that did would find the thread's state half made, the processor model's locks
    // held (a nested entry could wait on them forever) or the logical processor already in
    // enclave mode while the thread is not yet (its own EENTER would be #GP). So the
    // asynchronous signals wait while this enters, and are let through only between two
    // tries, where the model is as before the instruction (a leaf the driver must retry
    // under EPC pressure), as the kernel delivers them between two faults of one
    // instruction.
    let host_mask = signals::block_all_async();
    let st = thread::current(&engine.processor);
    thread::alt_stack(st);
    let host_fs = sys::fs_base();
    let host_gs = sys::gs_base();
    let mut regs = frame::regs(words, host_fs, host_gs);
    loop {
        match enclu_from_outside(engine, st, &mut regs, Some(&host_mask)) {
            Ok(Ran::Done) => break,
            Ok(Ran::Interrupted) => {
                signals::set_mask(&host_mask);
                signals::block_all_async();
            }
            Err(e) => {
                signals::set_mask(&host_mask);
                fail(words, e);
                return;
            }
        }
    }
    patch::prepare(engine, &st.cpus().lp, words[frame::RBX]);
    words[frame::RAX] = regs.rax;
    words[frame::RCX] = regs.rcx;
    words[frame::RIP] = regs.rip;
    words[frame::STATUS] = vdso::STATUS_ENTER;
    st.host_fs.store(host_fs, Ordering::Relaxed);
    st.host_gs.store(host_gs, Ordering::Relaxed);
    st.host_mask.set(host_mask);
    st.enclave_fs.store(regs.fsbase, Ordering::Relaxed);
    st.enclave_gs.store(regs.gsbase, Ordering::Relaxed);
    st.soft_frame.store(raw as u64, Ordering::Release);
    st.in_enclave.store(true, Ordering::Release);
    // The thread is in enclave mode from here on, everything the exit needs is recorded,
    // and what is left (this function's end and the vDSO's jump) may be abandoned: a
    // signal that waited is delivered at once, as an interrupt of the enclave at its first
    // instruction (see `unfinished_entry`). Those whose handlers the emulator does not
    // wrap keep waiting until the enclave exits.
    sys::set_sigmask_in_own_text(&signals::enclave_mask(&host_mask));
    // Last: from here on no thread-local storage is reachable until the enclave exits, and
    // a system call is the enclave's #UD.
    sys::set_gs_base(regs.gsbase);
    sys::set_fs_base(regs.fsbase);
    crate::syscall_dispatch::block(st.alt_stack.get());
}

fn fail(words: &mut [u64; frame::WORDS], e: Exception) {
    let fault = Fault::from_exception(e);
    words[frame::STATUS] = vdso::STATUS_EXCEPTION;
    words[frame::VECTOR] = u64::from(fault.vector);
    words[frame::ERROR] = u64::from(fault.code);
    words[frame::ADDR] = fault.addr;
}
