//! ENCLS and ENCLU as instructions: decode the leaf from EAX, run it with the register
//! operands, and leave the results in the registers (spec §3.2, §3.3).

use sgxemu_arch::{Encls, Enclu};

use crate::fault::{Exception, Status};
use crate::lp::Lp;
use crate::memory::{Memory, PageTable};
use crate::processor::Processor;
use crate::regs::Regs;

/// Length of ENCLS (0F 01 CF) and ENCLU (0F 01 D7).
const INSN_LEN: u64 = 3;

impl Processor {
    /// Executes ENCLS at `regs.rip` (ring 0): EAX selects the leaf, RBX/RCX/RDX are its
    /// operands. On success RAX/RFLAGS (and RBX for EDBGRD) hold the results and RIP moves
    /// past the instruction; on an exception nothing changed and the caller delivers it.
    pub fn encls(&self, lp: &mut Lp, regs: &mut Regs, mem: &mut dyn Memory) -> Result<(), Exception> {
        // Upper 32 bits of RAX are ignored (spec §3.3).
        let leaf = Encls::try_from(regs.rax as u32).map_err(|_| Exception::Gp)?;
        if leaf.is_sgx2() && !self.config.sgx2 {
            return Err(Exception::Gp);
        }
        let (rbx, rcx, rdx) = (regs.rbx, regs.rcx, regs.rdx);
        let status = match leaf {
            Encls::Ecreate => self.ecreate(lp, mem, rbx, rcx).map(|()| None)?,
            Encls::Eadd => self.eadd(lp, mem, rbx, rcx).map(|()| None)?,
            Encls::Eextend => self.eextend(lp, rbx, rcx).map(|()| None)?,
            Encls::Epa => self.epa(lp, rbx, rcx).map(|()| None)?,
            Encls::Eaug => self.eaug(lp, mem, rbx, rcx).map(|()| None)?,
            Encls::Einit => Some(self.einit(lp, mem, rbx, rcx, rdx)?),
            Encls::Eremove => Some(self.eremove(lp, rcx)?),
            Encls::Edbgrd => {
                let (status, value) = self.edbgrd(lp, rcx)?;
                if status == Status::Success {
                    regs.rbx = value;
                }
                Some(status)
            }
            Encls::Edbgwr => Some(self.edbgwr(lp, rcx, rbx)?),
            Encls::Eldb => Some(self.eldb(lp, mem, rbx, rcx, rdx)?),
            Encls::Eldu => Some(self.eldu(lp, mem, rbx, rcx, rdx)?),
            Encls::Eblock => Some(self.eblock(lp, rcx)?),
            Encls::Ewb => Some(self.ewb(lp, mem, rbx, rcx, rdx)?),
            Encls::Etrack => Some(self.etrack(lp, rcx)?),
            Encls::Emodpr => Some(self.emodpr(lp, mem, rbx, rcx)?),
            Encls::Emodt => Some(self.emodt(lp, mem, rbx, rcx)?),
        };
        if let Some(status) = status {
            regs.rax = status.rax();
            regs.rflags = status.apply_to_rflags(regs.rflags);
        }
        regs.rip = regs.rip.wrapping_add(INSN_LEN);
        // Leaves that can change an EPCM entry's type, permissions or state name the page
        // in RCX (EPC address).
        if matches!(
            leaf,
            Encls::Eaug
                | Encls::Eremove
                | Encls::Eldb
                | Encls::Eldu
                | Encls::Eblock
                | Encls::Ewb
                | Encls::Emodpr
                | Encls::Emodt
        ) && let Some(page) = self.epc_index(rcx)
        {
            self.notify_epcm_changed(page);
        }
        Ok(())
    }

    /// Executes ENCLU at `regs.rip` (ring 3). Leaves that enter or leave the enclave set
    /// RIP themselves; the others move it past the instruction. On an exception nothing
    /// changed; if `lp` is in enclave mode the caller then performs an AEX
    /// ([`Processor::aex`]) before delivering it, as hardware does.
    pub fn enclu(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> Result<(), Exception> {
        let leaf = Enclu::try_from(regs.rax as u32).map_err(|_| Exception::Gp)?;
        if leaf.is_sgx2() && !self.config.sgx2 {
            return Err(Exception::Gp);
        }
        let entering = matches!(leaf, Enclu::Eenter | Enclu::Eresume);
        if entering == lp.in_enclave() {
            return Err(Exception::Gp);
        }
        let target = regs.rcx;
        let result = match leaf {
            Enclu::Eenter => self.eenter(lp, regs, pt),
            Enclu::Eresume => self.eresume(lp, regs, pt),
            Enclu::Eexit => self.eexit(lp, regs),
            Enclu::Ereport => self.ereport(lp, regs, pt),
            Enclu::Emodpe => self.emodpe(lp, regs, pt),
            Enclu::Egetkey => self.egetkey(lp, regs, pt).map(drop),
            Enclu::Eaccept => self.eaccept(lp, regs, pt).map(drop),
            Enclu::Eacceptcopy => self.eacceptcopy(lp, regs, pt).map(drop),
        };
        // EACCEPT, EACCEPTCOPY and EMODPE change the EPCM entry of the page RCX names.
        if matches!(leaf, Enclu::Emodpe | Enclu::Eaccept | Enclu::Eacceptcopy)
            && let crate::memory::Translation::Present { pa, .. } = pt.translate(target)
            && let Some(page) = self.epc_index(pa)
        {
            self.notify_epcm_changed(page);
        }
        result
    }
}
