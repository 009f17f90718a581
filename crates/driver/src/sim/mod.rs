//! A deterministic in-process platform for testing the driver: processes with VMAs, PTEs,
//! anonymous memory and file descriptors; threads whose logical processors run scripted
//! enclave programs through the processor's access checks, AEX and ERESUME, with the
//! driver's fault handler in the loop; IPIs, a backing store and the reclaimer thread. No
//! signals and no host mappings: everything is ordinary data.

mod page_table;
mod platform;
mod process;
mod sgx2;
mod test_enclave;
mod thread;

use std::sync::Arc;

use sgxemu_cpu::{PlatformConfig, PlatformSecrets, Processor};

pub use platform::{MemoryBacking, SimPlatform};
pub use process::{FaultResolution, File, MapKind, Process, Pte};
pub use sgx2::{NO_PROGRESS_LIMIT, Sgx2Op, Sgx2Outcome, ioctl_at, sgx2_once, sgx2_range};
pub use test_enclave::{LoadError, TestEnclave, layout};
pub use thread::{Exit, SimThread, Step, UserContext, VDSO_ENCLU};

use crate::encls::Cpu;
use crate::sgx::Sgx;

/// One simulated machine: an SGX2 (or SGX1) part, the driver loaded on it, and the
/// platform services.
#[derive(Debug)]
pub struct Machine {
    /// The processor.
    pub processor: Arc<Processor>,
    /// The driver.
    pub sgx: Arc<Sgx>,
    /// IPIs, backing stores, reclaimer wake-ups.
    pub platform: Arc<SimPlatform>,
}

impl Machine {
    /// A machine with `config` (secrets seeded unless given).
    pub fn new(mut config: PlatformConfig) -> Self {
        config.secrets.get_or_insert_with(|| PlatformSecrets::from_seed([0x3C; 16]));
        let processor = Arc::new(Processor::new(config).expect("simulated platform configuration is valid"));
        let platform = Arc::new(SimPlatform::default());
        let sgx = Sgx::new(processor.clone(), platform.clone()).expect("the simulated part has launch control");
        Machine { processor, sgx, platform }
    }

    /// A machine with `epc` bytes of EPC on an SGX2 part.
    pub fn with_epc(epc: u64) -> Self {
        Self::new(PlatformConfig { epc_size: epc, ..PlatformConfig::default() })
    }

    /// A new process.
    pub fn process(&self) -> Arc<Process> {
        Arc::new(Process::new(self.sgx.clone()))
    }

    /// A new thread of `process`, reachable by IPIs.
    pub fn thread(&self, process: &Arc<Process>) -> SimThread {
        let thread = SimThread::new(process.clone(), &self.processor, self.platform.clone());
        let lp = thread.user().lock().lp.id();
        self.platform.register(lp, thread.user());
        thread
    }

    /// A CPU for kernel threads (ksgxd).
    pub fn kernel_cpu(&self) -> Cpu {
        self.sgx.new_cpu()
    }

    /// Runs exactly one reclaim batch (`sgx_reclaim_pages`: up to `NR_TO_SCAN` pages off the
    /// head of the active list, aged, written out) on `cpu`, whatever the watermarks, so
    /// tests can step the reclaimer batch by batch. Returns the EPC pages freed (a written-out
    /// SECS included).
    pub fn reclaim_batch(&self, cpu: &mut Cpu) -> usize {
        crate::reclaim::reclaim_pages(&self.sgx, cpu, crate::epc::NR_TO_SCAN)
    }
}
