//! The emulated platform inside this process: the processor over a memfd EPC, the driver,
//! the process's enclave mappings and its open device files.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use sgxemu_cpu::{PlatformConfig, Processor};
use sgxemu_driver::Sgx;

use crate::device::Devices;
use crate::epc_memory::MemfdEpc;
use crate::platform::NativePlatform;
use crate::space::{EpcmFollower, Space};
use crate::sys;

/// Everything the emulator holds for one process.
#[derive(Debug)]
pub struct Engine {
    /// The emulated processor.
    pub processor: Arc<Processor>,
    /// The driver.
    pub sgx: Arc<Sgx>,
    /// The EPC's host memory.
    pub epc: Arc<MemfdEpc>,
    /// This process's enclave mappings.
    pub space: Arc<Space>,
    /// Open `/dev/sgx_*` files.
    pub devices: Devices,
    /// IPIs, backing store, the reclaimer thread.
    pub platform: Arc<NativePlatform>,
    /// The process the engine was built in (a fork child builds its own).
    pub pid: i32,
}

static ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());
static INIT: Mutex<()> = Mutex::new(());

/// Why the platform could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration was refused.
    #[error("emulated processor: {0}")]
    Processor(#[from] sgxemu_cpu::ProcessorError),
    /// Host memory for the EPC could not be set up.
    #[error("EPC memory: {0}")]
    Memory(#[from] std::io::Error),
    /// The driver refused the part.
    #[error("driver: {0}")]
    Driver(#[from] sgxemu_driver::InitError),
}

/// The platform configuration for this process: the environment's, with XFRM limited to
/// what the host enabled.
pub fn platform_config() -> PlatformConfig {
    let mut config = crate::config::from_env();
    config.xfrm &= crate::xfeatures::host_xcr0();
    config
}

/// Before a fork: the child must inherit no enclave page.
extern "C" fn before_fork() {
    if let Some(engine) = Engine::get() {
        engine.space.exclude_from_fork();
    }
}

/// In a fork child: the parent's enclaves are not inherited, so neither is its engine.
extern "C" fn forget_in_child() {
    ENGINE.store(std::ptr::null_mut(), Ordering::Release);
    crate::alt_stack::forget_all_in_child();
    crate::thread::forget_current_in_child();
}

impl Engine {
    fn build(mut config: PlatformConfig) -> Result<Engine, EngineError> {
        config.xfrm &= crate::xfeatures::host_xcr0();
        let epc = Arc::new(MemfdEpc::new(config.epc_pages())?);
        let processor = Arc::new(Processor::with_epc_memory(config, epc.clone())?);
        let platform = NativePlatform::new(processor.clone());
        let sgx = Sgx::new(processor.clone(), platform.clone())?;
        let space = Space::new(processor.clone(), epc.clone());
        processor.set_epcm_observer(Arc::new(EpcmFollower(Arc::downgrade(&space))));
        platform.attach(&sgx);
        Ok(Engine { processor, sgx, epc, space, devices: Devices::default(), platform, pid: sys::getpid() })
    }

    /// Reads the enclave bytes at `addr` through the EPC alias (the enclave's own mapping may
    /// not be readable): one translation per page. `false` if a page is not mapped.
    pub fn read_mapped(&self, addr: u64, buf: &mut [u8]) -> bool {
        let mut done = 0;
        while done < buf.len() {
            let at = addr.wrapping_add(done as u64);
            let offset = (at % 4096) as usize;
            let piece = (4096 - offset).min(buf.len() - done);
            let Some(page) = self.space.epc_at(at) else { return false };
            self.processor.read_epc(page, offset, &mut buf[done..done + piece]);
            done += piece;
        }
        true
    }

    /// The engine of this process, if it was started (lock-free and without a system call:
    /// every interposed libc call and every signal handler asks).
    pub fn get() -> Option<&'static Engine> {
        // SAFETY: a published engine is leaked, never freed.
        unsafe { ENGINE.load(Ordering::Acquire).as_ref() }
    }

    /// The engine of this process, started on first use. A fork child starts a fresh one:
    /// the parent's enclaves are not inherited.
    pub fn start() -> Result<&'static Engine, EngineError> {
        Self::start_with(crate::config::from_env())
    }

    /// [`start`](Self::start) with an explicit platform configuration (XFRM is still
    /// limited to what the host enabled). If the engine already runs, it is returned as it
    /// is: one process has one emulated platform.
    pub fn start_with(config: PlatformConfig) -> Result<&'static Engine, EngineError> {
        if let Some(engine) = Self::get() {
            return Ok(engine);
        }
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        // A child made by a raw clone (no atfork handlers) still holds the parent's engine.
        if let Some(engine) = Self::get().filter(|e| e.pid == sys::getpid()) {
            return Ok(engine);
        }
        let engine: &'static Engine = Box::leak(Box::new(Self::build(config)?));
        ENGINE.store(engine as *const Engine as *mut Engine, Ordering::Release);
        crate::isolation::init();
        crate::signals::install();
        static ATFORK: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers plain extern "C" functions without arguments for fork parents and children.
        ATFORK.call_once(|| unsafe {
            libc::pthread_atfork(Some(before_fork), None, Some(forget_in_child));
        });
        Ok(engine)
    }
}
