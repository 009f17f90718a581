//! `sgxemu demo`: builds, signs and loads the bundled sample enclave, walks the whole SGX2
//! lifecycle — EAUG by access and EACCEPT-first, a new thread, restricted and re-extended
//! permissions, trim and removal, EPC oversubscription — then shows local attestation
//! between two enclaves, printing a timeline with counts and timings.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use sgxemu_arch::{PAGE_SIZE, PageType, SecinfoFlags as F};
use sgxemu_crypto::SigningKey;
use sgxemu_enclave::layout::Layout;
use sgxemu_enclave::sign::hex;
use sgxemu_enclave::{Device, EnclaveException, EnterError, FlowError, LoadProgress};
use sgxemu_samples::host::{SampleEnclave, SampleError};
use sgxemu_samples::{ATTEST_ELF, DEMO_ELF, PING_MAGIC, op};
use zerocopy::IntoBytes;

use crate::size::ByteSize;

const PAGE: u64 = PAGE_SIZE as u64;

/// Which driver the demo uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The emulator inside this process (no preload, no hardware).
    Emulated,
    /// The kernel's /dev/sgx_enclave and vDSO: SGX2 hardware, or `sgxemu run -- sgxemu demo --device kernel`.
    Kernel,
}

/// Options of `sgxemu demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the enclaves live.
    #[arg(long, value_enum, default_value = "emulated")]
    pub device: DeviceChoice,
    /// EPC size of the in-process emulator (with --device kernel: the platform's, set by `sgxemu run --epc`).
    #[arg(long, value_name = "SIZE", default_value = "32M")]
    pub epc: ByteSize,
    /// How much memory to grow the heap by with EACCEPT-first.
    #[arg(long, value_name = "SIZE", default_value = "4M")]
    pub grow: ByteSize,
    /// Oversubscription: touch this many times the EPC size (1 to 1024).
    #[arg(long, value_name = "FACTOR", default_value_t = 2)]
    pub oversubscribe: u64,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Device(#[from] sgxemu_enclave::DeviceError),
    #[error("{0}")]
    Sample(#[from] SampleError),
    #[error("{0}")]
    Key(#[from] sgxemu_crypto::KeyError),
    #[error("{step}: {source}")]
    Enter { step: &'static str, source: EnterError },
    #[error("{step}: {source}")]
    Flow { step: &'static str, source: FlowError },
    #[error("{step}: {what}")]
    Unexpected { step: &'static str, what: String },
    #[error("--{what} must be {rule}")]
    Option { what: &'static str, rule: &'static str },
}

/// The timeline: one line per step with the time since the start.
struct Timeline<'a> {
    out: &'a mut dyn Write,
    start: Instant,
    steps: usize,
    progress: bool,
}

impl Timeline<'_> {
    fn step(&mut self, name: &str, took: Duration, text: &str) {
        self.steps += 1;
        self.clear_progress();
        let at = self.start.elapsed().as_secs_f64() * 1e3;
        let _ = writeln!(self.out, "[{at:9.1} ms] {name:<14} {text} ({})", human(took));
    }

    fn note(&mut self, text: &str) {
        self.clear_progress();
        let _ = writeln!(self.out, "{:14} {:<14} {text}", "", "");
    }

    /// A progress line on stderr, when it is a terminal.
    fn progress(&self, what: &str, done: u64, total: u64) {
        if self.progress {
            eprint!("\r  {what}: {done}/{total} ({:.0}%)   ", done as f64 * 100.0 / total.max(1) as f64);
        }
    }

    fn clear_progress(&self) {
        if self.progress {
            eprint!("\r{:70}\r", "");
        }
    }
}

fn human(d: Duration) -> String {
    match d.as_secs_f64() {
        s if s >= 1.0 => format!("{s:.2} s"),
        s if s >= 1e-3 => format!("{:.1} ms", s * 1e3),
        s => format!("{:.1} us", s * 1e6),
    }
}

fn short(bytes: &[u8]) -> String {
    hex(&bytes[..8]) + "…"
}

fn enter_err(step: &'static str) -> impl FnOnce(EnterError) -> DemoError {
    move |source| DemoError::Enter { step, source }
}

fn flow_err(step: &'static str) -> impl FnOnce(FlowError) -> DemoError {
    move |source| DemoError::Flow { step, source }
}

fn check(step: &'static str, ok: bool, what: impl FnOnce() -> String) -> Result<(), DemoError> {
    if ok { Ok(()) } else { Err(DemoError::Unexpected { step, what: what() }) }
}

/// Counters of the in-process emulator (none for the kernel device).
fn emulator_counts(device: &Device) -> Option<(u64, u64, usize)> {
    match device.kind() {
        sgxemu_enclave::DeviceKind::Emulated => {
            let stats = sgxemu_native::stats::collect();
            let ewb = stats.encls[sgxemu_arch::Encls::Ewb.raw() as usize];
            let eldu = stats.encls[sgxemu_arch::Encls::Eldu.raw() as usize];
            let free = sgxemu_native::Engine::get().map_or(0, |e| e.sgx.free_pages());
            Some((ewb, eldu, free))
        }
        sgxemu_enclave::DeviceKind::Kernel => None,
    }
}

/// The largest `--oversubscribe` factor.
const MAX_OVERSUBSCRIBE: u64 = 1024;

/// Runs the demo, writing the timeline to `out`.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<(), DemoError> {
    // The upper bound keeps the touched size (factor × EPC, at most 64 GiB) far inside 64 bits
    // and below the maximum enclave size.
    if !(1..=MAX_OVERSUBSCRIBE).contains(&args.oversubscribe) {
        return Err(DemoError::Option { what: "oversubscribe", rule: "between 1 and 1024" });
    }
    if args.grow.0 < PAGE || !args.grow.0.is_multiple_of(PAGE) {
        return Err(DemoError::Option { what: "grow", rule: "a non-zero multiple of 4 KiB" });
    }
    let device = match args.device {
        DeviceChoice::Emulated => {
            let config = sgxemu_native::PlatformConfig { epc_size: args.epc.0, ..Default::default() };
            config.validate().map_err(|e| DemoError::Unexpected { step: "--epc", what: e.to_string() })?;
            Device::emulated_with(config)?
        }
        DeviceChoice::Kernel => Device::kernel()?,
    };
    let epc = match args.device {
        DeviceChoice::Emulated => args.epc.0,
        // Under `sgxemu run` the platform's EPC size is in the environment it set.
        DeviceChoice::Kernel => {
            std::env::var("SGXEMU_EPC").ok().and_then(|v| v.parse::<ByteSize>().ok()).map_or(args.epc.0, |s| s.0)
        }
    };
    let mut t = Timeline { out, start: Instant::now(), steps: 0, progress: std::io::stderr().is_terminal() };
    let _ = writeln!(
        t.out,
        "sgxemu demo: the SGX2 enclave lifecycle on {} (EPC {} MiB)\n",
        match args.device {
            DeviceChoice::Emulated => "the in-process emulator",
            DeviceChoice::Kernel => "/dev/sgx_enclave",
        },
        epc >> 20
    );
    Demo::new(&device, args, epc, &mut t)?.run(&mut t)?;
    let total = t.start.elapsed();
    let _ = writeln!(t.out, "\ndone: {} steps in {}", t.steps, human(total));
    Ok(())
}

/// Offsets inside the demo enclave's dynamic area, one region per step.
struct Regions {
    /// Pages grown "by access".
    touched: u64,
    /// The EACCEPT-first heap growth.
    grown: u64,
    /// The new thread's block: stack page, TCS, SSA frames.
    thread: u64,
    /// The oversubscription area.
    big: u64,
}

struct Demo<'d> {
    device: &'d Device,
    key: SigningKey,
    demo: SampleEnclave,
    regions: Regions,
    grow_pages: u64,
    big_pages: u64,
}

/// Pages the new thread needs: a stack page, the TCS, two SSA frames.
const THREAD_PAGES: u64 = 4;
/// Pages grown by access.
const TOUCHED_PAGES: u64 = 8;
/// Pages whose permissions are restricted and re-extended.
const RESTRICTED_PAGES: u64 = 16;

impl<'d> Demo<'d> {
    fn new(device: &'d Device, args: &DemoArgs, epc: u64, t: &mut Timeline<'_>) -> Result<Demo<'d>, DemoError> {
        let started = Instant::now();
        let key = SigningKey::generate(&mut getrandom::rand_core::UnwrapErr(getrandom::SysRng))?;
        t.step(
            "keygen",
            started.elapsed(),
            &format!("RSA-3072, e = 3 signing key: MRSIGNER {}", short(&key.mrsigner())),
        );

        let grow_pages = args.grow.0 / PAGE;
        let big_pages = args.oversubscribe * epc / PAGE;
        let regions_pages = TOUCHED_PAGES + grow_pages + THREAD_PAGES + big_pages;
        let layout = Layout { dynamic_pages: regions_pages, ..Layout::default() };
        let started = Instant::now();
        let image = sgxemu_enclave::elf::image_from_elf(DEMO_ELF, &layout).map_err(SampleError::from)?;
        let measured = image.measured_page_count();
        t.step(
            "build",
            started.elapsed(),
            &format!(
                "demo enclave ({} KiB ELF): {} pages, {measured} measured, {} threads, ELRANGE {} MiB",
                DEMO_ELF.len() / 1024,
                image.page_count(),
                image.tcs.len(),
                image.size >> 20,
            ),
        );

        let started = Instant::now();
        let mut last = LoadProgress { pages_added: 0, pages_total: 0 };
        let demo = SampleEnclave::load_image(device, image, &key, &mut |p| {
            t.progress("adding pages", p.pages_added as u64, p.pages_total as u64);
            last = p;
        })?;
        t.step(
            "sign + load",
            started.elapsed(),
            &format!(
                "SIGSTRUCT signed for MRENCLAVE {}; ECREATE, {} pages EADDed, EINIT ok; enclave at {:#x}",
                short(&demo.enclave.mrenclave()),
                last.pages_added,
                demo.enclave.base()
            ),
        );
        let dynamic = demo.image.dynamic_start;
        let regions = Regions {
            touched: dynamic,
            grown: dynamic + TOUCHED_PAGES * PAGE,
            thread: dynamic + (TOUCHED_PAGES + grow_pages) * PAGE,
            big: dynamic + (TOUCHED_PAGES + grow_pages + THREAD_PAGES) * PAGE,
        };
        Ok(Demo { device, key, demo, regions, grow_pages, big_pages })
    }

    fn tcs(&self, i: usize) -> u64 {
        self.demo.enclave.tcs()[i]
    }

    fn run(mut self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let device = self.device;
        self.enter(t)?;
        self.eaug_by_access(t)?;
        self.eaccept_first(t)?;
        self.add_thread(t)?;
        self.restrict_and_extend(t)?;
        self.trim(t)?;
        self.oversubscribe(t)?;
        self.attest(t)?;
        let started = Instant::now();
        drop(self);
        let text = match sgxemu_native::Engine::get().filter(|_| device.kind() == sgxemu_enclave::DeviceKind::Emulated)
        {
            Some(engine) => {
                let (free, total) = (engine.sgx.free_pages(), engine.processor.config().epc_pages());
                check("teardown", free as u64 == total, || {
                    format!("{} of {total} EPC pages still in use", total - free as u64)
                })?;
                format!("enclaves closed: all {total} EPC pages free again")
            }
            None => "enclaves closed".to_owned(),
        };
        t.step("teardown", started.elapsed(), &text);
        Ok(())
    }

    fn enter(&self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "enter";
        let calls = 1000;
        let started = Instant::now();
        for _ in 0..calls {
            let ret = self.demo.call(self.tcs(0), op::PING, [0; 6]).map_err(enter_err(step))?;
            check(step, ret[0] == PING_MAGIC && ret[1] == self.tcs(0), || format!("PING answered {ret:x?}"))?;
        }
        let took = started.elapsed();
        t.step(
            step,
            took,
            &format!("{calls} PING calls (EENTER + EEXIT through the vDSO): {} each", human(took / calls)),
        );
        Ok(())
    }

    /// Accept the page an EPCM fault names, from thread 1, so thread 0 can be resumed.
    fn accept_faulting_page(&self, e: &EnclaveException, accepted: &mut u64) -> bool {
        if !e.is_epcm_fault() {
            return false;
        }
        let page = e.address & !(PAGE - 1);
        let flags = (F::R | F::W | F::PENDING).with_page_type(PageType::Reg);
        let ok = self
            .demo
            .call(self.tcs(1), op::ACCEPT, [page, PAGE, flags.bits(), 0, 0, 0])
            .is_ok_and(|r| r[..2] == [1, 0]);
        *accepted += u64::from(ok);
        ok
    }

    fn eaug_by_access(&self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "EAUG by access";
        let (addr, len) = (self.demo.addr(self.regions.touched), TOUCHED_PAGES * PAGE);
        let started = Instant::now();
        let mut accepted = 0;
        let mut first = None;
        let ret = self
            .demo
            .call_fixing(self.tcs(0), op::FILL, [addr, len, 7, 0, 0, 0], &mut |e| {
                first.get_or_insert(*e);
                self.accept_faulting_page(e, &mut accepted)
            })
            .map_err(enter_err(step))?;
        let bad = self.demo.call(self.tcs(0), op::CHECK, [addr, len, 7, 0, 0, 0]).map_err(enter_err(step))?[0];
        check(step, ret[0] == len && bad == 0 && accepted == TOUCHED_PAGES, || {
            format!("{accepted} pages accepted, {bad} bad words")
        })?;
        t.step(
            step,
            started.elapsed(),
            &format!(
                "{TOUCHED_PAGES} pages written: each write EAUGed a PENDING page, then faulted: {}",
                first.map_or(String::new(), |e| e.to_string())
            ),
        );
        t.note("  → thread 1 EACCEPTed each page, thread 0 was ERESUMEd and its write completed; data verified");
        Ok(())
    }

    fn eaccept_first(&self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "EACCEPT-first";
        let range = self.regions.grown..self.regions.grown + self.grow_pages * PAGE;
        let started = Instant::now();
        self.demo.enclave.grow(range.clone(), &mut self.demo.acceptor(self.tcs(0))).map_err(flow_err(step))?;
        let took = started.elapsed();
        let (addr, len) = (self.demo.addr(range.start), range.end - range.start);
        self.demo.call(self.tcs(0), op::FILL, [addr, len, 11, 0, 0, 0]).map_err(enter_err(step))?;
        let bad = self.demo.call(self.tcs(0), op::CHECK, [addr, len, 11, 0, 0, 0]).map_err(enter_err(step))?[0];
        check(step, bad == 0, || format!("{bad} bad words"))?;
        t.step(
            step,
            took,
            &format!(
                "heap grown by {} KiB: {} pages EAUGed on the EACCEPTs' faults ({} per page); written and verified",
                len / 1024,
                self.grow_pages,
                human(took / self.grow_pages as u32)
            ),
        );
        Ok(())
    }

    fn add_thread(&mut self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "add thread";
        let block = self.regions.thread;
        let tcs_offset = block + PAGE;
        let started = Instant::now();
        // Stack page, TCS page (REG for now) and the SSA frames, EAUGed and accepted.
        self.demo
            .enclave
            .grow(block..block + THREAD_PAGES * PAGE, &mut self.demo.acceptor(self.tcs(0)))
            .map_err(flow_err(step))?;
        let entry = self
            .demo
            .image
            .entry()
            .ok_or_else(|| DemoError::Unexpected { step, what: "the image has no TCS".into() })?;
        let tcs = sgxemu_enclave::layout::thread_tcs(tcs_offset, 2, entry);
        let bytes = tcs.as_bytes();
        self.demo
            .call(
                self.tcs(0),
                op::COPY_IN,
                [self.demo.addr(tcs_offset), bytes.as_ptr() as u64, bytes.len() as u64, 0, 0, 0],
            )
            .map_err(enter_err(step))?;
        let new =
            self.demo.enclave.add_thread(tcs_offset, &mut self.demo.acceptor(self.tcs(0))).map_err(flow_err(step))?;
        let ret = self.demo.call(new, op::PING, [0; 6]).map_err(enter_err(step))?;
        check(step, ret[0] == PING_MAGIC && ret[1] == new, || format!("PING on the new thread answered {ret:x?}"))?;
        t.step(
            step,
            started.elapsed(),
            &format!(
                "TCS written into an EAUGed page, MODIFY_TYPES(TCS) + EACCEPT: PING on thread {} at {new:#x} ok",
                self.demo.enclave.tcs().len() - 1
            ),
        );
        Ok(())
    }

    fn restrict_and_extend(&self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "permissions";
        let range = self.regions.grown..self.regions.grown + RESTRICTED_PAGES * PAGE;
        let started = Instant::now();
        self.demo
            .enclave
            .restrict(range.clone(), F::R, &mut self.demo.acceptor(self.tcs(0)))
            .map_err(flow_err(step))?;
        let restricted = started.elapsed();
        let target = self.demo.addr(range.start);
        let mut fault = None;
        let rw = F::R | F::W;
        self.demo
            .call_fixing(self.tcs(0), op::WRITE, [target, 0x5eed, 0, 0, 0, 0], &mut |e| {
                if fault.is_some() || !e.is_epcm_fault() {
                    return false;
                }
                fault = Some(*e);
                // Thread 1 re-extends the permissions of the whole range with EMODPE.
                let len = range.end - range.start;
                self.demo.call(self.tcs(1), op::EMODPE, [target, len, rw.bits(), 0, 0, 0]).is_ok()
            })
            .map_err(enter_err(step))?;
        let value = self.demo.call(self.tcs(0), op::READ, [target, 0, 0, 0, 0, 0]).map_err(enter_err(step))?[0];
        let fault = fault.ok_or_else(|| DemoError::Unexpected {
            step,
            what: "the write to a read-only page did not fault".into(),
        })?;
        check(step, value == 0x5eed, || format!("read back {value:#x}"))?;
        t.step(step, restricted, &format!("RESTRICT_PERMISSIONS(R) + EACCEPT(PR) on {RESTRICTED_PAGES} pages"));
        t.note(&format!("  → a write faulted: {fault}; thread 1 EMODPE'd RW back, ERESUME: the write completed"));
        Ok(())
    }

    fn trim(&mut self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "trim + remove";
        let range = self.regions.touched..self.regions.thread + THREAD_PAGES * PAGE;
        let pages = (range.end - range.start) / PAGE;
        let threads = self.demo.enclave.tcs().len();
        let started = Instant::now();
        self.demo.enclave.trim(range.clone(), &mut self.demo.acceptor(self.tcs(0))).map_err(flow_err(step))?;
        let took = started.elapsed();
        check(step, self.demo.enclave.tcs().len() == threads - 1, || "the added thread's TCS is still listed".into())?;
        // The removed addresses are holes again: an access EAUGs a fresh, PENDING page and
        // faults on it; thread 1 accepts it and thread 0 resumes.
        let mut fault = None;
        let mut accepted = 0;
        let addr = self.demo.addr(range.start);
        self.demo
            .call_fixing(self.tcs(0), op::READ, [addr, 0, 0, 0, 0, 0], &mut |e| {
                fault.get_or_insert(*e);
                self.accept_faulting_page(e, &mut accepted)
            })
            .map_err(enter_err(step))?;
        check(step, fault.is_some_and(|e| e.is_epcm_fault()) && accepted == 1, || {
            format!("reading a removed page gave {fault:?}")
        })?;
        t.step(
            step,
            took,
            &format!(
                "MODIFY_TYPES(TRIM) + EACCEPT + REMOVE_PAGES: {pages} pages incl. the added thread's TCS ({:.0} pages/s)",
                pages as f64 / took.as_secs_f64()
            ),
        );
        t.note("  → a read there afterwards EAUGed a fresh PENDING page and faulted, as on hardware");
        Ok(())
    }

    fn oversubscribe(&mut self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "oversubscribe";
        let before = emulator_counts(self.device);
        let chunk = 256 * PAGE;
        let total = self.big_pages * PAGE;
        let start = self.regions.big;
        let started = Instant::now();
        let mut at = 0;
        while at < total {
            let len = chunk.min(total - at);
            let range = start + at..start + at + len;
            self.demo.enclave.grow(range, &mut self.demo.acceptor(self.tcs(0))).map_err(flow_err(step))?;
            let addr = self.demo.addr(start + at);
            self.demo.call(self.tcs(0), op::FILL, [addr, len, at, 0, 0, 0]).map_err(enter_err(step))?;
            at += len;
            t.progress("growing and writing", at / PAGE, self.big_pages);
        }
        let mut bad = 0;
        let mut at = 0;
        while at < total {
            let len = chunk.min(total - at);
            let addr = self.demo.addr(start + at);
            bad += self.demo.call(self.tcs(1), op::CHECK, [addr, len, at, 0, 0, 0]).map_err(enter_err(step))?[0];
            at += len;
            t.progress("reading back", at / PAGE, self.big_pages);
        }
        let took = started.elapsed();
        check(step, bad == 0, || format!("{bad} words came back different"))?;
        let moved = match (before, emulator_counts(self.device)) {
            (Some((ewb0, eldu0, _)), Some((ewb, eldu, _))) => {
                format!("; the reclaimer wrote {} pages out (EWB), {} came back (ELDU)", ewb - ewb0, eldu - eldu0)
            }
            _ => String::new(),
        };
        t.step(step, took, &format!("{} MiB grown, written and read back bit-identical{moved}", total >> 20));
        let started = Instant::now();
        self.demo.enclave.trim(start..start + total, &mut self.demo.acceptor(self.tcs(0))).map_err(flow_err(step))?;
        let took = started.elapsed();
        t.step(
            "trim + remove",
            took,
            &format!(
                "the {} MiB returned to the EPC ({:.0} pages/s)",
                total >> 20,
                self.big_pages as f64 / took.as_secs_f64()
            ),
        );
        Ok(())
    }

    fn attest(&self, t: &mut Timeline<'_>) -> Result<(), DemoError> {
        let step = "attestation";
        let started = Instant::now();
        let attest = SampleEnclave::load(self.device, ATTEST_ELF, &Layout::default(), &self.key, &mut |_| {})?;
        let (demo_tcs, attest_tcs) = (self.tcs(0), attest.enclave.tcs()[0]);
        let target = self.demo.targetinfo(demo_tcs).map_err(enter_err(step))?;
        const GREETING: &[u8] = b"hello from the attest enclave";
        let mut data = [0u8; 64];
        data[..GREETING.len()].copy_from_slice(GREETING);
        let report = attest.report(attest_tcs, &target, &data).map_err(enter_err(step))?;
        let valid = self.demo.verify(demo_tcs, &report).map_err(enter_err(step))?;
        let elsewhere = attest.verify(attest_tcs, &report).map_err(enter_err(step))?;
        check(step, valid && !elsewhere, || {
            format!("MAC valid for the target: {valid}; for another enclave: {elsewhere}")
        })?;
        check(step, report.mrenclave == attest.image.mrenclave(), || {
            "REPORT.MRENCLAVE is not the attest enclave's".into()
        })?;
        t.step(
            step,
            started.elapsed(),
            &format!(
                "attest enclave (MRENCLAVE {}) REPORTed to the demo enclave: its EGETKEY MAC check passed",
                short(&report.mrenclave)
            ),
        );
        t.note("  → the same REPORT fails the check in any other enclave (tried in the attest enclave itself)");
        Ok(())
    }
}
