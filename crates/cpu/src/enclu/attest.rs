//! EREPORT and EGETKEY (spec §5.5, §5.6).

use sgxemu_arch::{
    Attributes, AttributesFlags, Enclu, ErrorCode, KEYPOLICY_KSS_MASK, KEYPOLICY_RESERVED, Keyname, Keypolicy,
    Keyrequest, Report, Targetinfo,
};
use sgxemu_crypto::{KeyDependencies, aes128_cmac};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::epc::EpcIndex;
use crate::fault::{Exception, LeafResult, Status};
use crate::keys::{ReportTarget, attributes_bytes, cpusvn_within};
use crate::lp::{EnclaveContext, Lp};
use crate::memory::PageTable;
use crate::processor::Processor;
use crate::regs::Regs;

use super::Need;

/// REPORTDATA operand size and alignment.
const REPORTDATA_SIZE: usize = 64;
const REPORTDATA_ALIGN: u64 = 128;
/// EGETKEY's output: one 128-bit key, 16-byte aligned.
const KEY_SIZE: u64 = 16;

impl Processor {
    /// EREPORT (RBX = TARGETINFO, RCX = REPORTDATA, RDX = output REPORT): a REPORT of the
    /// current enclave, MACed with the target's REPORT key (spec §5.5).
    pub fn ereport(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> Result<(), Exception> {
        lp.stats.count_enclu(Enclu::Ereport);
        let ctx = Self::context(lp)?;
        let (ti_la, data_la, out_la) = (regs.rbx, regs.rcx, regs.rdx);
        let elrange = &ctx.enclave.params;
        let aligned = ti_la % Targetinfo::ALIGN as u64 == 0
            && data_la % REPORTDATA_ALIGN == 0
            && out_la % Report::ALIGN as u64 == 0;
        if !aligned || !elrange.contains(ti_la) || !elrange.contains(data_la) || !elrange.contains(out_la) {
            return Err(Exception::Gp);
        }
        let ti_page = self.own_reg_page(ctx, pt, ti_la, Need::Read)?;
        let targetinfo: Targetinfo = self.read_epc_obj(ti_page, ti_la);
        if targetinfo.has_reserved_bits(false) {
            return Err(Exception::Gp);
        }
        let data_page = self.own_reg_page(ctx, pt, data_la, Need::Read)?;
        let out_page = self.own_reg_page(ctx, pt, out_la, Need::Write)?;
        let mut reportdata = [0u8; REPORTDATA_SIZE];
        self.epc.read(data_page, in_page(data_la), &mut reportdata);
        let report = self.build_report(ctx, &targetinfo, reportdata);
        self.epc.write(out_page, in_page(out_la), report.as_bytes());
        regs.rip = regs.rip.wrapping_add(super::entry::ENCLU_LEN);
        Ok(())
    }

    fn build_report(&self, ctx: &EnclaveContext, targetinfo: &Targetinfo, reportdata: [u8; 64]) -> Report {
        let enclave = &ctx.enclave;
        let identity = enclave.identity.get();
        let mut report = Report::new_zeroed();
        report.cpusvn = self.secrets.cpusvn;
        report.miscselect = enclave.params.miscselect.bits();
        report.attributes = enclave.attributes();
        report.configid = enclave.params.configid;
        report.configsvn = enclave.params.configsvn;
        if let Some(id) = identity {
            report.mrenclave = id.mrenclave;
            report.mrsigner = id.mrsigner;
            report.isvprodid = id.isvprodid;
            report.isvsvn = id.isvsvn;
            report.isvextprodid = id.isvextprodid;
            report.isvfamilyid = id.isvfamilyid;
        }
        report.reportdata = reportdata;
        report.keyid = self.secrets.report_keyid;
        let key = self.report_key(
            ReportTarget {
                mrenclave: &targetinfo.measurement,
                attributes: targetinfo.attributes,
                miscselect: targetinfo.miscselect,
                configid: &targetinfo.configid,
                configsvn: targetinfo.configsvn,
            },
            &report.keyid,
        );
        report.mac = aes128_cmac(&key, report.mac_data());
        report
    }

    /// EGETKEY (RBX = KEYREQUEST, RCX = 16-byte output): derives the requested key for the
    /// current enclave (spec §5.6).
    pub fn egetkey(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> LeafResult {
        let result = self.egetkey_checked(lp, regs, pt);
        super::complete_with_status(regs, result)
    }

    fn egetkey_checked(&self, lp: &mut Lp, regs: &Regs, pt: &dyn PageTable) -> LeafResult {
        lp.stats.count_enclu(Enclu::Egetkey);
        let ctx = Self::context(lp)?;
        let (req_la, out_la) = (regs.rbx, regs.rcx);
        let p = &ctx.enclave.params;
        if req_la % Keyrequest::ALIGN as u64 != 0
            || out_la % KEY_SIZE != 0
            || !p.contains(req_la)
            || !p.contains(out_la)
        {
            return Err(Exception::Gp);
        }
        let req_page = self.own_reg_page(ctx, pt, req_la, Need::Read)?;
        let out_page = self.own_reg_page(ctx, pt, out_la, Need::Write)?;
        let request: Keyrequest = self.read_epc_obj(req_page, req_la);
        let status = match self.derive_requested_key(ctx, &request)? {
            Ok(key) => {
                self.epc.write(out_page, in_page(out_la), &key);
                Status::Success
            }
            Err(code) => Status::Error(code),
        };
        Ok(status)
    }

    /// Checks 1–4 of EGETKEY and the key; the outer error is #GP, the inner a ZF-error.
    fn derive_requested_key(
        &self,
        ctx: &EnclaveContext,
        req: &Keyrequest,
    ) -> Result<Result<[u8; 16], ErrorCode>, Exception> {
        let enclave = &ctx.enclave;
        let p = &enclave.params;
        let kss = p.flags().contains(AttributesFlags::KSS);
        // 1.
        if req.reserved1 != 0 || req.reserved2.iter().any(|&b| b != 0) || req.keypolicy & KEYPOLICY_RESERVED != 0 {
            return Err(Exception::Gp);
        }
        // 2.
        if !kss && (req.keypolicy & KEYPOLICY_KSS_MASK != 0 || req.configsvn > 0) {
            return Err(Exception::Gp);
        }
        // 3.
        let attrs = enclave.attributes();
        let tmp_attributes = Attributes {
            flags: (req.attributemask.flags | 0x3) & attrs.flags,
            xfrm: req.attributemask.xfrm & attrs.xfrm,
        };
        let tmp_misc = req.miscmask & p.miscselect.bits();
        let policy = Keypolicy::from_bits_retain(req.keypolicy);
        let Some(id) = enclave.identity.get() else {
            return Err(Exception::Gp);
        };
        // 4.
        let Ok(keyname) = Keyname::try_from(req.keyname) else {
            return Ok(Err(ErrorCode::InvalidKeyname));
        };
        let svn_checks = || -> Result<(), ErrorCode> {
            if !cpusvn_within(&req.cpusvn, &self.secrets.cpusvn) {
                return Err(ErrorCode::InvalidCpusvn);
            }
            if req.isvsvn > id.isvsvn || req.configsvn > p.configsvn {
                return Err(ErrorCode::InvalidIsvsvn);
            }
            Ok(())
        };
        // Inputs shared by SEAL, EINITTOKEN and the PROVISION keys.
        let common = KeyDependencies {
            keyname: keyname as u16,
            attributes: attributes_bytes(tmp_attributes),
            isvsvn: req.isvsvn,
            cpusvn: req.cpusvn,
            padding: id.padding,
            miscselect: tmp_misc,
            ..KeyDependencies::default()
        };
        // The KSS identity selections SEAL and PROVISION_SEAL honour.
        let kss_selected = |mut d: KeyDependencies| {
            if !policy.contains(Keypolicy::NOISVPRODID) {
                d.isvprodid = id.isvprodid;
            }
            if policy.contains(Keypolicy::CONFIGID) {
                d.configid = p.configid;
                d.configsvn = req.configsvn;
            }
            if policy.contains(Keypolicy::ISVFAMILYID) {
                d.isvfamilyid = id.isvfamilyid;
            }
            if policy.contains(Keypolicy::ISVEXTPRODID) {
                d.isvextprodid = id.isvextprodid;
            }
            d
        };
        let deps = match keyname {
            Keyname::Report => {
                let target = ReportTarget {
                    mrenclave: &id.mrenclave,
                    attributes: attrs,
                    miscselect: p.miscselect.bits(),
                    configid: &p.configid,
                    configsvn: p.configsvn,
                };
                return Ok(Ok(self.report_key(target, &req.keyid)));
            }
            Keyname::Seal => {
                if let Err(code) = svn_checks() {
                    return Ok(Err(code));
                }
                kss_selected(KeyDependencies {
                    ownerepoch: self.secrets.owner_epoch,
                    attributemask: attributes_bytes(req.attributemask),
                    mrenclave: if policy.contains(Keypolicy::MRENCLAVE) { id.mrenclave } else { [0; 32] },
                    mrsigner: if policy.contains(Keypolicy::MRSIGNER) { id.mrsigner } else { [0; 32] },
                    keyid: req.keyid,
                    seal_key_fuses: self.secrets.seal_fuses,
                    miscmask: !req.miscmask,
                    keypolicy: req.keypolicy,
                    ..common
                })
            }
            Keyname::Einittoken => {
                if !attrs.flags().contains(AttributesFlags::EINITTOKENKEY) {
                    return Ok(Err(ErrorCode::InvalidAttribute));
                }
                if let Err(code) = svn_checks() {
                    return Ok(Err(code));
                }
                KeyDependencies {
                    ownerepoch: self.secrets.owner_epoch,
                    mrsigner: id.mrsigner,
                    isvprodid: id.isvprodid,
                    keyid: req.keyid,
                    seal_key_fuses: self.secrets.seal_fuses,
                    ..common
                }
            }
            Keyname::Provision | Keyname::ProvisionSeal => {
                if !attrs.flags().contains(AttributesFlags::PROVISIONKEY) {
                    return Ok(Err(ErrorCode::InvalidAttribute));
                }
                if let Err(code) = svn_checks() {
                    return Ok(Err(code));
                }
                let base = KeyDependencies {
                    attributemask: attributes_bytes(req.attributemask),
                    mrsigner: id.mrsigner,
                    isvprodid: id.isvprodid,
                    miscmask: !req.miscmask,
                    ..common
                };
                if keyname == Keyname::ProvisionSeal {
                    kss_selected(KeyDependencies { seal_key_fuses: self.secrets.seal_fuses, ..base })
                } else {
                    base
                }
            }
        };
        Ok(Ok(self.derive_key(&deps)))
    }

    pub(crate) fn read_epc_obj<T: FromBytes + IntoBytes>(&self, page: EpcIndex, la: u64) -> T {
        let mut value = T::new_zeroed();
        self.epc.read(page, in_page(la), value.as_mut_bytes());
        value
    }
}

pub(crate) fn in_page(la: u64) -> usize {
    (la % sgxemu_arch::PAGE_SIZE as u64) as usize
}
