//! Simulated threads: a logical processor running a process's untrusted code and its
//! enclave programs, entering through the vDSO's ABI, with every fault going through the
//! processor's access checks, the AEX, the kernel's fault path and the driver.

use rustc_hash::FxHashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use sgxemu_arch::{Enclu, Vector};
use sgxemu_cpu::{Access, AccessKind, AexEvent, Exception, Lp, Processor, Regs};
use sgxemu_uapi::{EENTER, EEXIT, ERESUME, SgxEnclaveRun};

use crate::encls::Cpu;

use super::platform::SimPlatform;
use super::process::{FaultResolution, Process};

/// Where the simulated vDSO's ENCLU sits (the AEP); EEXIT returns just after it.
pub const VDSO_ENCLU: u64 = 0x7FFF_F7FF_1000;

/// One step of an enclave program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Store bytes at an address (one access per page the range touches).
    Store {
        /// Linear address.
        addr: u64,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Load up to 8 bytes; the little-endian value is appended to the results.
    Load {
        /// Linear address.
        addr: u64,
        /// Bytes (1..=8).
        len: usize,
    },
    /// Execute ENCLU with these operands; RAX afterwards is appended to the results.
    Enclu {
        /// The leaf.
        leaf: Enclu,
        /// RBX.
        rbx: u64,
        /// RCX.
        rcx: u64,
        /// RDX.
        rdx: u64,
    },
    /// Fetch (execute) at an address.
    Fetch {
        /// Linear address.
        addr: u64,
    },
    /// EEXIT back to the vDSO.
    Exit,
}

/// A program bound to a TCS at EENTER: the step index is the enclave RIP minus the entry
/// point, so an AEX/ERESUME (which save and restore RIP through the SSA) resumes it.
#[derive(Clone, Debug)]
pub(crate) struct Program {
    /// Shared with the thread running it, which reads steps without copying them.
    steps: Arc<Vec<Step>>,
    entry: u64,
    results: Vec<u64>,
}

/// A thread's view of the program its TCS runs while it is inside the enclave: the steps
/// (shared with the TCS's program, so no step is copied and no lock taken per step) and the
/// results produced since the last hand-over to the TCS's program.
struct Running {
    steps: Option<Arc<Vec<Step>>>,
    entry: u64,
    results: Vec<u64>,
}

/// What `__vdso_sgx_enter_enclave` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The return value (0, or -EINVAL).
    pub ret: i32,
    /// `struct sgx_enclave_run` after the call.
    pub run: SgxEnclaveRun,
    /// Values the program's loads and ENCLU steps produced, in order.
    pub results: Vec<u64>,
}

impl Exit {
    /// True for a normal EEXIT.
    pub fn exited(&self) -> bool {
        self.ret == 0 && self.run.function == EEXIT
    }
}

/// The part of a thread an IPI can reach: the LP that enters enclaves and its registers.
#[derive(Debug)]
pub struct UserContext {
    processor: Arc<Processor>,
    /// The logical processor.
    pub lp: Lp,
    /// Its user-mode registers.
    pub regs: Regs,
}

impl UserContext {
    /// An interrupt: AEX if inside an enclave (the IPI's effect).
    pub(crate) fn interrupt(&mut self) {
        let UserContext { processor, lp, regs } = self;
        processor.aex(lp, regs, AexEvent::interrupt());
    }
}

enum Inside {
    Exited,
    Faulted { exception: Exception, cr2: u64 },
    Interrupted,
}

/// How the kernel disposed of a user fault.
enum Disposition {
    Retry,
    Report { vector: u16, code: u16, addr: u64 },
}

/// A simulated thread of a process.
#[derive(Debug)]
pub struct SimThread {
    process: Arc<Process>,
    user: Arc<Mutex<UserContext>>,
    /// The CPU this thread's system calls and faults run on in the kernel.
    pub kernel: Cpu,
    programs: Arc<Mutex<FxHashMap<u64, Program>>>,
    platform: Arc<SimPlatform>,
    pause: PauseHook,
}

/// A one-shot pause inside the enclave ([`SimThread::pause_inside_before`]).
#[derive(Default)]
struct PauseHook(Option<(usize, Box<dyn FnOnce() + Send>)>);

impl std::fmt::Debug for PauseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PauseHook").field(&self.0.as_ref().map(|(step, _)| step)).finish()
    }
}

impl SimThread {
    /// Test hook: the next time this thread is about to run step `step` of an enclave
    /// program, it calls `at_pause` first, while its logical processor is inside the enclave
    /// between two instructions and holds nothing an IPI needs (e.g. to rendezvous with a
    /// test that reclaims meanwhile). An IPI taken during the pause makes the step go
    /// through AEX and ERESUME, as an interrupt between two instructions would.
    pub fn pause_inside_before(&mut self, step: usize, at_pause: impl FnOnce() + Send + 'static) {
        self.pause = PauseHook(Some((step, Box::new(at_pause))));
    }

    pub(crate) fn new(process: Arc<Process>, processor: &Arc<Processor>, platform: Arc<SimPlatform>) -> Self {
        let user = UserContext { processor: processor.clone(), lp: processor.new_lp(), regs: Regs::default() };
        let programs = process.programs.clone();
        let user = Arc::new(Mutex::new(user));
        SimThread { process, user, kernel: Cpu::new(processor), programs, platform, pause: PauseHook::default() }
    }

    pub(crate) fn user(&self) -> &Arc<Mutex<UserContext>> {
        &self.user
    }

    /// The process.
    pub fn process(&self) -> &Arc<Process> {
        &self.process
    }

    /// ioctl(2) from this thread.
    pub fn ioctl(&mut self, fd: i32, cmd: u32, arg: u64) -> crate::errno::KResult<()> {
        self.process.ioctl(&mut self.kernel, fd, cmd, arg)
    }

    /// `__vdso_sgx_enter_enclave(…, function, run)` with `run.tcs = tcs`: EENTER runs
    /// `program` from the TCS's entry point; ERESUME continues the program the TCS was
    /// running. Returns like the vDSO: 0 with `run.function == EEXIT`, or 0 with the
    /// exception fields set (function = EAX at the fault), or -EINVAL for a bad leaf.
    pub fn enter(&mut self, tcs: u64, function: u32, program: Option<Vec<Step>>) -> Exit {
        self.enter_run(SgxEnclaveRun { tcs, ..SgxEnclaveRun::default() }, function, program)
    }

    /// `__vdso_sgx_enter_enclave` with `run.user_handler` set (driver spec §1.5 steps 7–8):
    /// `handler` stands for the user handler and is called with the run struct on both exit
    /// paths (normal EEXIT and reported exception). A return value ≤ 0 is what the vDSO
    /// returns; a value > 0 re-enters with that leaf (EENTER runs `program` again; anything
    /// but EENTER/ERESUME gives -EINVAL without another call). `run` is the caller's struct:
    /// `tcs`, `user_data` and exception fields from earlier calls persist unless overwritten.
    pub fn enter_with_handler(
        &mut self,
        mut run: SgxEnclaveRun,
        mut function: u32,
        program: Option<Vec<Step>>,
        handler: &mut dyn FnMut(&mut SgxEnclaveRun) -> i32,
    ) -> Exit {
        loop {
            let mut exit = self.enter_run(run, function, program.clone());
            if exit.ret != 0 {
                return exit;
            }
            let ret = handler(&mut exit.run);
            if ret <= 0 {
                exit.ret = ret;
                return exit;
            }
            run = exit.run;
            function = ret as u32;
        }
    }

    /// The vDSO with the caller's `run` struct: -EINVAL for a bad leaf or non-zero reserved
    /// bytes; otherwise `function` (and on an exception the exception fields) is written.
    fn enter_run(&mut self, mut run: SgxEnclaveRun, function: u32, program: Option<Vec<Step>>) -> Exit {
        let tcs = run.tcs;
        if !(EENTER..=ERESUME).contains(&function) || run.reserved.iter().any(|&q| q != 0) {
            return Exit { ret: -22, run, results: Vec::new() };
        }
        let mut pending_program = program;
        {
            let mut user = self.user.lock();
            user.regs.rax = u64::from(function);
            user.regs.rbx = tcs;
            user.regs.rcx = VDSO_ENCLU;
            user.regs.rip = VDSO_ENCLU;
        }
        loop {
            // ENCLU at the AEP: EENTER or ERESUME.
            let entered = {
                let mut guard = self.user.lock();
                let UserContext { processor, lp, regs } = &mut *guard;
                let leaf = regs.rax as u32;
                let inflight = self.process.shootdown.read();
                let result = processor.enclu(lp, regs, &*self.process);
                drop(inflight);
                // EENTER succeeds at most once per call (later entries are ERESUMEs), so the
                // program moves in rather than being copied.
                if result.is_ok()
                    && leaf == EENTER
                    && let Some(steps) = pending_program.take()
                {
                    let program = Program { steps: Arc::new(steps), entry: regs.rip, results: Vec::new() };
                    self.programs.lock().insert(tcs, program);
                }
                result.map_err(|e| (e, regs.rax as u32))
            };
            if let Err((exception, leaf)) = entered {
                let cr2 = match exception {
                    Exception::Pf { addr, .. } => addr,
                    _ => 0,
                };
                match self.kernel_fault(exception, cr2) {
                    Disposition::Retry => continue,
                    Disposition::Report { vector, code, addr } => {
                        return self.report(run, leaf, vector, code, addr, tcs);
                    }
                }
            }
            match self.run_inside(tcs) {
                Inside::Exited => {
                    run.function = EEXIT;
                    let results = self.programs.lock().get(&tcs).map(|p| p.results.clone()).unwrap_or_default();
                    return Exit { ret: 0, run, results };
                }
                Inside::Interrupted => continue,
                Inside::Faulted { exception, cr2 } => match self.kernel_fault(exception, cr2) {
                    Disposition::Retry => continue,
                    Disposition::Report { vector, code, addr } => {
                        return self.report(run, ERESUME, vector, code, addr, tcs);
                    }
                },
            }
        }
    }

    fn report(&self, mut run: SgxEnclaveRun, function: u32, vector: u16, code: u16, addr: u64, tcs: u64) -> Exit {
        run.function = function;
        run.exception_vector = vector;
        run.exception_error_code = code;
        run.exception_addr = addr;
        let results = self.programs.lock().get(&tcs).map(|p| p.results.clone()).unwrap_or_default();
        Exit { ret: 0, run, results }
    }

    /// The kernel's side of a user-mode exception at the vDSO's ENCLU: resolvable page
    /// faults are retried; everything else is reported through the vDSO's fixup.
    fn kernel_fault(&mut self, exception: Exception, cr2: u64) -> Disposition {
        match exception {
            Exception::Pf { addr, code } => {
                let resolution = self.process.handle_fault(&mut self.kernel, addr, code);
                match resolution {
                    FaultResolution::Retry => {
                        // The fault path never reclaims; it woke ksgxd and asks for a retry.
                        // When no EPC page is free the retry cannot progress, so the
                        // simulated scheduler runs ksgxd first (unless the test runs a ksgxd
                        // thread of its own). Waiting for an empty free list, rather than the
                        // low watermark, keeps tiny EPCs from reclaiming the page a fault just
                        // mapped before the access is retried.
                        let sgx = self.process.sgx();
                        if self.platform.inline_ksgxd() && sgx.free_pages() == 0 && sgx.ksgxd_should_run() {
                            sgx.ksgxd_run(&mut self.kernel);
                        }
                        Disposition::Retry
                    }
                    FaultResolution::Segv | FaultResolution::Bus | FaultResolution::Oom => {
                        Disposition::Report { vector: Vector::Pf as u16, code: code.bits() as u16, addr: cr2 }
                    }
                }
            }
            Exception::Gp => Disposition::Report { vector: Vector::Gp as u16, code: 0, addr: 0 },
            Exception::Ud => Disposition::Report { vector: Vector::Ud as u16, code: 0, addr: 0 },
        }
    }

    /// Runs the TCS's program until it exits, faults (after the AEX) or is interrupted.
    fn run_inside(&mut self, tcs: u64) -> Inside {
        let mut running = self.running(tcs);
        let inside = loop {
            let mut guard = self.user.lock();
            let UserContext { processor, lp, regs } = &mut *guard;
            if !lp.in_enclave() {
                break Inside::Interrupted;
            }
            let index = regs.rip.wrapping_sub(running.entry) as usize;
            let pause_here = |&(at, _): &(usize, _)| running.steps.is_some() && index == at;
            if self.pause.0.as_ref().is_some_and(pause_here) {
                let (_, at_pause) = self.pause.0.take().expect("checked");
                drop(guard);
                // The test's code may let anything happen meanwhile: look the program up again.
                self.hand_over(tcs, running);
                at_pause();
                running = self.running(tcs);
                continue;
            }
            let Running { steps, results, .. } = &mut running;
            let step = steps.as_ref().and_then(|steps| steps.get(index)).unwrap_or(&Step::Exit);
            if *step == Step::Exit {
                regs.rax = Enclu::Eexit as u64;
                regs.rbx = VDSO_ENCLU + 3;
                if processor.eexit(lp, regs).is_ok() {
                    break Inside::Exited;
                }
            }
            let inflight = self.process.shootdown.read();
            let executed = self.execute(processor, lp, regs, results, step);
            drop(inflight);
            match executed {
                Ok(()) => regs.rip += 1,
                Err(exception) => {
                    let report = processor.aex(lp, regs, AexEvent::from_exception(exception));
                    let cr2 = report.map_or(0, |r| r.cr2);
                    break Inside::Faulted { exception, cr2 };
                }
            }
        };
        self.hand_over(tcs, running);
        inside
    }

    /// The program `tcs` runs now (none: the thread finds nothing to do and exits).
    fn running(&self, tcs: u64) -> Running {
        let programs = self.programs.lock();
        let program = programs.get(&tcs);
        Running { steps: program.map(|p| p.steps.clone()), entry: program.map_or(0, |p| p.entry), results: Vec::new() }
    }

    /// Appends the results gathered while running to the TCS's program, where the vDSO's
    /// return reads them.
    fn hand_over(&self, tcs: u64, running: Running) {
        if running.results.is_empty() {
            return;
        }
        if let Some(program) = self.programs.lock().get_mut(&tcs) {
            program.results.extend(running.results);
        }
    }

    fn execute(
        &self,
        processor: &Processor,
        lp: &mut Lp,
        regs: &mut Regs,
        results: &mut Vec<u64>,
        step: &Step,
    ) -> Result<(), Exception> {
        let process = &*self.process;
        match step {
            Step::Store { addr, data } => {
                for (i, chunk) in split_by_page(*addr, data.len()) {
                    match processor.check_access(lp, process, chunk, AccessKind::Write)? {
                        Access::Enclave { page, offset } => {
                            processor.write_epc(page, offset, &data[i..i + len_in_page(chunk, data.len() - i)])
                        }
                        Access::Normal { .. } | Access::AbortPage => {}
                    }
                }
                Ok(())
            }
            Step::Load { addr, len } => {
                let mut bytes = [0u8; 8];
                match processor.check_access(lp, process, *addr, AccessKind::Read)? {
                    Access::Enclave { page, offset } => processor.read_epc(page, offset, &mut bytes[..*len]),
                    Access::AbortPage => bytes[..*len].fill(0xFF),
                    Access::Normal { .. } => {}
                }
                results.push(u64::from_le_bytes(bytes));
                Ok(())
            }
            Step::Fetch { addr } => processor.check_access(lp, process, *addr, AccessKind::Execute).map(drop),
            Step::Enclu { leaf, rbx, rcx, rdx } => {
                let rip = regs.rip;
                regs.rax = *leaf as u64;
                regs.rbx = *rbx;
                regs.rcx = *rcx;
                regs.rdx = *rdx;
                processor.enclu(lp, regs, process)?;
                regs.rip = rip;
                results.push(regs.rax);
                Ok(())
            }
            Step::Exit => Err(Exception::Gp),
        }
    }
}

fn len_in_page(addr: u64, remaining: usize) -> usize {
    let room = (sgxemu_arch::PAGE_SIZE as u64 - addr % sgxemu_arch::PAGE_SIZE as u64) as usize;
    room.min(remaining)
}

/// (offset into the data, address) of each page-sized piece of `[addr, addr + len)`.
fn split_by_page(addr: u64, len: usize) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut done = 0;
    while done < len {
        let at = addr + done as u64;
        out.push((done, at));
        done += len_in_page(at, len - done);
    }
    out
}
