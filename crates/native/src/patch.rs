//! Instructions of enclave code the emulator carries out itself.
//!
//! At an enclave's first entry its executable pages are swept with a decoder (runs of
//! contiguous executable pages, each from its first byte), and the instructions that must
//! trap begin with `hlt` in the EPC: ENCLU (which traps anyway, but as a #UD, or in a KVM
//! guest a #GP the hypervisor takes first: 2.7 µs against 1.3–1.6 µs for `hlt` here), the
//! XSAVE family where the host's XCR0 enables more than the enclave's XFRM
//! ([`crate::xfeatures`]), and PAUSE, for pause-loop exiting ([`crate::pause_loop`]). That happens after EINIT, so MRENCLAVE is unaffected; code that
//! reads its own text sees the `hlt` (a documented fidelity limit), and pages that were not
//! in the EPC at the first entry, or are added later, run unpatched.
//!
//! `hlt` rather than `ud2`: in user mode it is a #GP, and in a KVM guest a #UD costs several
//! times as much as a #GP (KVM intercepts #UD to emulate hypercall instructions; measured
//! here: 14–19 µs against 1.3–2.6 µs per round trip). Being one byte, it also replaces the
//! instruction's first byte in a single store, which a thread running that code meanwhile
//! sees whole.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use parking_lot::{Mutex, RwLock};
use sgxemu_arch::{PageType, SecinfoFlags};
use sgxemu_cpu::{EpcIndex, Lp};

use crate::engine::Engine;

/// Whether PAUSE is patched ([`crate::config::pause_exiting`], read once).
fn pause_exiting() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(crate::config::pause_exiting)
}
use crate::xfeatures;

const PAGE: u64 = 4096;
/// `hlt`: a #GP in user mode.
pub const TRAP: u8 = 0xf4;

/// A patched instruction: the enclave (EID) it belongs to and the instruction as decoded.
#[derive(Clone, Copy)]
struct Site {
    eid: u64,
    insn: Instruction,
}

static SITES: LazyLock<RwLock<HashMap<u64, Site>>> = LazyLock::new(|| RwLock::new(HashMap::new()));
static PREPARED: LazyLock<Mutex<HashSet<u64>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Patches the enclave that owns the TCS at `tcs`, once per enclave (`lp` just entered it,
/// so its XCR0 is the enclave's XFRM).
pub fn prepare(engine: &Engine, lp: &Lp, tcs: u64) {
    let Some(eid) = engine.space.epc_at(tcs).and_then(|page| engine.processor.epcm_view(page).eid) else {
        return;
    };
    if !PREPARED.lock().insert(eid) {
        return;
    }
    let (xfrm, xfeatures) = (lp.xcr0, xfeatures::needed(lp.xcr0));
    let pause = pause_exiting();
    let patched = sweep(engine, eid, tcs, |insn| match insn.mnemonic() {
        Mnemonic::Enclu => true,
        Mnemonic::Pause => pause,
        _ => xfeatures::must_emulate(insn, xfrm),
    });
    if crate::signals::tracing() {
        crate::sys::stderr_line(&format!(
            "sgxemu: enclave {eid}: {patched} instructions patched (ENCLU{}{})\n",
            if pause { ", PAUSE" } else { "" },
            if xfeatures { ", the XSAVE family to run under XFRM" } else { "" }
        ));
    }
}

/// The executable pages of the enclave `eid` (the one whose TCS is mapped at `tcs`), by address.
fn executable_pages(engine: &Engine, eid: u64, tcs: u64) -> Vec<(u64, EpcIndex)> {
    // The enclave's own resident pages, not a scan of the whole EPC: a program that creates
    // many small enclaves sweeps each at its first entry.
    let Some((encl, _)) = engine.space.vma_at(tcs) else { return Vec::new() };
    let mut pages: Vec<(u64, EpcIndex)> = encl
        .epc_pages()
        .into_iter()
        .filter_map(|index| {
            let view = engine.processor.epcm_view(index);
            let code = view.valid
                && view.eid == Some(eid)
                && view.page_type == PageType::Reg
                && view.flags.contains(SecinfoFlags::X);
            code.then_some((view.enclave_address, index))
        })
        .collect();
    pages.sort_unstable_by_key(|&(address, _)| address);
    pages
}

/// Decodes each run of contiguous executable pages from its first byte and replaces each
/// instruction `wanted` picks with [`TRAP`]; returns how many it patched.
fn sweep(engine: &Engine, eid: u64, tcs: u64, wanted: impl Fn(&Instruction) -> bool) -> usize {
    let pages = executable_pages(engine, eid, tcs);
    let mut patched = 0;
    for run in pages.chunk_by(|a, b| b.0 == a.0 + PAGE) {
        let mut bytes = vec![0u8; run.len() * PAGE as usize];
        for (chunk, &(_, index)) in bytes.chunks_mut(PAGE as usize).zip(run) {
            engine.processor.read_epc(index, 0, chunk);
        }
        let start = run[0].0;
        let mut sites = SITES.write();
        for insn in Decoder::with_ip(64, &bytes, start, DecoderOptions::NONE) {
            if !wanted(&insn) {
                continue;
            }
            let at = (insn.ip() - start) as usize;
            let (linaddr, page) = run[at / PAGE as usize];
            // Recorded first: a thread may run the patched byte as soon as it is written.
            sites.insert(insn.ip(), Site { eid, insn });
            if engine.processor.write_epc_if_owned(page, eid, linaddr, at % PAGE as usize, &[TRAP]) {
                patched += 1;
            }
        }
    }
    patched
}

/// The instruction the [`TRAP`] at `rip` in the enclave `eid` stands for, if it is one of
/// ours.
pub fn patched_instruction(eid: u64, rip: u64) -> Option<Instruction> {
    SITES.read().get(&rip).filter(|site| site.eid == eid).map(|site| site.insn)
}

/// Whether `addr` holds a patched PAUSE.
pub fn is_pause(engine: &Engine, addr: u64) -> bool {
    engine
        .space
        .epc_at(addr)
        .and_then(|page| engine.processor.epcm_view(page).eid)
        .and_then(|eid| patched_instruction(eid, addr))
        .is_some_and(|insn| insn.mnemonic() == Mnemonic::Pause)
}
