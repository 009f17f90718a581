//! The host side of the samples: build, sign and load one through a [`Device`], call its
//! operations, and run the enclave half of the EDMM flows ([`Accept`]) with its ACCEPT
//! operation.

use std::ops::Range;

use sgxemu_arch::{PAGE_SIZE, Report, SecinfoFlags, Targetinfo};
use sgxemu_crypto::SigningKey;
use sgxemu_enclave::layout::Layout;
use sgxemu_enclave::{
    Accept, Device, Enclave, EnclaveException, EnclaveImage, EnterError, LoadError, LoadProgress, Next, Registers,
    SigstructFields,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::{Call, op};

/// Why a sample could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("sample image: {0}")]
    Image(#[from] sgxemu_enclave::elf::ImageError),
    #[error("signing: {0}")]
    Sign(#[from] sgxemu_crypto::KeyError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A loaded sample enclave.
#[derive(Debug)]
pub struct SampleEnclave {
    /// The enclave.
    pub enclave: Enclave,
    /// Its image (for layout offsets and the entry point).
    pub image: EnclaveImage,
}

/// A failed operation: the enclave raised an exception, or the call itself failed.
pub type CallResult = Result<[u64; 4], EnterError>;

impl SampleEnclave {
    /// Builds the sample `elf` with `layout`, signs it with `key` and loads it on `device`.
    ///
    /// # Errors
    /// The image, signing or loading step that failed.
    pub fn load(
        device: &Device,
        elf: &[u8],
        layout: &Layout,
        key: &SigningKey,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<SampleEnclave, SampleError> {
        Self::load_image(device, sgxemu_enclave::elf::image_from_elf(elf, layout)?, key, progress)
    }

    /// Signs an image already built and loads it on `device`.
    ///
    /// # Errors
    /// The signing or loading step that failed.
    pub fn load_image(
        device: &Device,
        image: EnclaveImage,
        key: &SigningKey,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<SampleEnclave, SampleError> {
        let sig = sgxemu_enclave::sign_image(&image, &SigstructFields::for_image(&image), key)?;
        let enclave = Enclave::load(device, &image, &sig, progress)?;
        Ok(SampleEnclave { enclave, image })
    }

    /// The linear address of enclave offset `offset`.
    pub fn addr(&self, offset: u64) -> u64 {
        self.enclave.base() + offset
    }

    /// Runs `op` with `args` on `tcs`.
    ///
    /// # Errors
    /// An exception inside the enclave, or a refused entry.
    pub fn call(&self, tcs: u64, op: u64, args: [u64; 6]) -> CallResult {
        let mut call = Call::new(op, args);
        self.enclave.enter(tcs, Registers { rdi: &raw mut call as u64, ..Registers::default() })?;
        Ok(call.ret)
    }

    /// Runs `op` on `tcs`; after each exception, `fix` may repair its cause (returning
    /// true) and the thread is ERESUMEd where it stopped — what an SGX runtime's exception
    /// handling does. `fix` runs inside the vDSO's user handler, so it may call into the
    /// enclave on another TCS.
    ///
    /// # Errors
    /// An exception `fix` declined, or a refused entry.
    pub fn call_fixing(
        &self,
        tcs: u64,
        op: u64,
        args: [u64; 6],
        fix: &mut dyn FnMut(&EnclaveException) -> bool,
    ) -> CallResult {
        let mut call = Call::new(op, args);
        let regs = Registers { rdi: &raw mut call as u64, ..Registers::default() };
        self.enclave.enter_with_handler(tcs, regs, &mut |exit| match &exit.exception {
            None => Next::Return(0),
            Some(e) if fix(e) => Next::Resume,
            Some(_) => Next::Return(-libc::EFAULT),
        })?;
        Ok(call.ret)
    }

    /// The enclave half of EDMM on thread `tcs`: EACCEPT with its ACCEPT operation.
    pub fn acceptor(&self, tcs: u64) -> SampleAcceptor {
        SampleAcceptor { tcs }
    }

    /// The enclave's REPORT for `target` with `reportdata`.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn report(&self, tcs: u64, target: &Targetinfo, reportdata: &[u8; 64]) -> Result<Report, EnterError> {
        let mut report = Report::new_zeroed();
        let args = [
            target.as_bytes().as_ptr() as u64,
            reportdata.as_ptr() as u64,
            report.as_mut_bytes().as_mut_ptr() as u64,
            0,
            0,
            0,
        ];
        self.call(tcs, op::REPORT, args)?;
        Ok(report)
    }

    /// This enclave's TARGETINFO, from a REPORT it makes for itself.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn targetinfo(&self, tcs: u64) -> Result<Targetinfo, EnterError> {
        let own = self.report(tcs, &Targetinfo::new_zeroed(), &[0; 64])?;
        Ok(Targetinfo::from(&own))
    }

    /// Whether the enclave finds `report`'s MAC valid under its report key.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub fn verify(&self, tcs: u64, report: &Report) -> Result<bool, EnterError> {
        let ret = self.call(tcs, op::VERIFY, [report.as_bytes().as_ptr() as u64, 0, 0, 0, 0, 0])?;
        Ok(ret[0] == 1)
    }
}

/// [`Accept`] through a sample's ACCEPT operation on one thread.
#[derive(Clone, Copy, Debug)]
pub struct SampleAcceptor {
    tcs: u64,
}

impl Accept for SampleAcceptor {
    fn accept(&mut self, enclave: &Enclave, range: Range<u64>, flags: SecinfoFlags) -> Result<(), String> {
        let mut call = Call::new(
            op::ACCEPT,
            [enclave.base() + range.start, range.end.saturating_sub(range.start), flags.bits(), 0, 0, 0],
        );
        enclave
            .enter(self.tcs, Registers { rdi: &raw mut call as u64, ..Registers::default() })
            .map_err(|e| e.to_string())?;
        let pages = range.end.saturating_sub(range.start) / PAGE_SIZE as u64;
        match call.ret {
            [done, 0, ..] if done == pages => Ok(()),
            [done, status, ..] => Err(format!("EACCEPT returned SGX error {status} after {done} of {pages} pages")),
        }
    }
}
