//! The fuzzer's operations and their generator.
//!
//! An operation names *what* to do in terms that do not depend on the state it meets: a slot
//! (one of a thread's enclave files), page numbers relative to the slot's enclave base, and
//! a variant for every pointer and field. The executor resolves it against the current state
//! (an operation that needs something absent, e.g. `Dup` of an empty slot, is skipped). So a
//! thread's stream is a pure function of the seed, and any sub-sequence of it can be replayed
//! — what minimisation needs.

use crate::rng::Rng;

/// How many enclave files (slots) each thread juggles.
pub const SLOTS: u8 = 3;

/// Where an ioctl's argument structure is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgPtr {
    /// Readable and writable memory: the normal case.
    Valid,
    /// Address 0.
    Null,
    /// A kernel-half address (never user memory).
    Kernel,
    /// A page of this process mapped PROT_NONE.
    ProtNone,
    /// The structure's last byte lies in a PROT_NONE page.
    Straddle,
    /// Correct contents in a read-only page: reading works, writing back fails.
    ReadOnly,
}

/// Where an object the driver reads through a pointer inside the argument (SECS, SECINFO,
/// SIGSTRUCT) is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjPtr {
    /// Readable memory.
    Valid,
    /// Correct contents in a read-only page (reading is all the driver does: fine).
    ReadOnly,
    /// Address 0.
    Null,
    /// A kernel-half address.
    Kernel,
    /// A PROT_NONE page.
    ProtNone,
    /// Starts in readable memory and runs into a PROT_NONE page.
    Straddle,
}

/// The SECS a CREATE passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecsVariant {
    /// A valid SECS: ELRANGE at the slot's base, SIZE = 2^size_log2.
    Valid,
    /// SIZE 3 pages: not a power of two (driver: EINVAL).
    SizeNotPow2,
    /// SIZE 0 (driver: EINVAL).
    SizeZero,
    /// SIZE 2^63: the backing file's size overflows (kernel: EINVAL).
    Size2p63,
    /// SIZE one page: a power of two ECREATE refuses (EIO).
    SizeOnePage,
    /// SIZE 2^60, beyond the part's maximum (ECREATE: EIO).
    SizeHuge,
    /// BASEADDR not aligned to SIZE (ECREATE: EIO).
    BaseMisaligned,
    /// SSAFRAMESIZE 0 (ECREATE: EIO).
    SsaZero,
    /// XFRM 0 (ECREATE: EIO).
    XfrmZero,
    /// ATTRIBUTES.INIT set (ECREATE: EIO).
    AttrInit,
    /// A reserved attribute bit (ECREATE: EIO).
    AttrReserved,
    /// A 32-bit enclave above 4 GiB (ECREATE: EIO).
    NoMode64,
    /// A reserved SECS byte set (ECREATE: EIO).
    ReservedField,
}

/// Extra SECS attributes of a valid CREATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrVariant {
    /// MODE64BIT only.
    Plain,
    /// + DEBUG.
    Debug,
    /// + PROVISIONKEY (INIT needs a PROVISION first).
    ProvisionKey,
    /// + EINITTOKENKEY (INIT always EACCES).
    EinitTokenKey,
    /// + KSS.
    Kss,
}

/// The source pages of ADD_PAGES.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrcVariant {
    /// The fuzzer's enclave program (`enclave_program::code_page`).
    Code,
    /// A valid TCS for the page it is added at.
    Tcs,
    /// Zeros.
    Zero,
    /// A byte pattern.
    Pattern(u8),
    /// Pattern pages in read-only memory (the driver only reads: fine).
    ReadOnly,
    /// Page-unaligned `src` (EINVAL).
    Unaligned,
    /// Page `k` of the source is PROT_NONE (EFAULT at that page, after `k` pages).
    ProtNoneAt(u8),
    /// An execute-only source page (kernel: EFAULT, get_user_pages needs VM_READ).
    ExecOnly,
    /// The bytes an ExecOnly source holds (its page, then the read-only pattern pages after
    /// it), as read by a driver that lets it through: only used to follow such a driver.
    ExecOnlyContents,
    /// A kernel-half address (EFAULT at the first page).
    Kernel,
}

/// The SECINFO of ADD_PAGES.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecinfoVariant {
    /// PT_REG with these R/W/X bits (W without R: EINVAL).
    Reg(u8),
    /// PT_TCS, no permissions.
    Tcs,
    /// PT_TCS with R set (EINVAL).
    TcsWithPerms,
    /// Another page type (SECS, VA, TRIM, 0xFF): EINVAL.
    Type(u8),
    /// PT_REG|R with a reserved or EACCEPT-only flag bit (EINVAL).
    FlagBit(u8),
    /// PT_REG|R with a reserved byte set (EINVAL).
    ReservedByte,
    /// A valid SECINFO behind a bad pointer.
    Ptr(ObjPtr),
}

/// The SIGSTRUCT of INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigVariant {
    /// Signed for exactly the pages added so far.
    Valid,
    /// VENDOR neither 0 nor 0x8086 (EINVAL).
    BadVendor,
    /// The valid SIGSTRUCT with one signed byte changed (EINIT fails: EPERM).
    BadSignature,
    /// ATTRIBUTES.INIT set and compared (reserved: EINVAL).
    ReservedAttribute,
    /// A reserved MISCSELECT bit set and compared (EINVAL).
    ReservedMisc,
    /// A reserved XFRM bit set and compared (EINVAL).
    ReservedXfrm,
    /// A valid SIGSTRUCT behind a bad pointer.
    Ptr(ObjPtr),
}

/// The file descriptor PROVISION passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvFd {
    /// An open `/dev/sgx_provision`.
    Provision,
    /// The same with garbage in the upper 32 bits (the kernel uses the low 32).
    ProvisionHighBits,
    /// -1.
    Minus1,
    /// A number that is no open descriptor.
    Closed,
    /// `/dev/null`.
    DevNull,
    /// The enclave's own descriptor.
    Enclave,
}

/// The offset/length shape of a ranged ioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeShape {
    /// `page * 4096`, `npages * 4096`.
    Pages,
    /// Offset off by 8 bytes.
    UnalignedOffset,
    /// Length 0.
    ZeroLength,
    /// Length not a multiple of 4096.
    UnalignedLength,
    /// offset + length overflows u64.
    Overflow,
}

/// Non-zero output fields on input (SGX2 ioctls require zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFields {
    /// result = count = 0.
    Zero,
    /// result = 1.
    Result,
    /// count = 4096.
    Count,
}

/// What MMAP does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// MAP_SHARED | MAP_FIXED at the pages.
    SharedFixed,
    /// MAP_SHARED_VALIDATE | MAP_FIXED at the pages.
    SharedValidateFixed,
    /// MAP_PRIVATE | MAP_FIXED (EINVAL).
    Private,
    /// MAP_SHARED, the kernel chooses the address (then unmapped again).
    Anywhere,
    /// Length 0 (EINVAL).
    ZeroLength,
    /// MAP_SHARED | MAP_FIXED_NOREPLACE over the slot's own reservation (EEXIST).
    FixedNoReplace,
    /// File offset not page aligned (EINVAL).
    UnalignedOffset,
    /// A hint that is not page aligned, no MAP_FIXED (kernel rounds: success).
    UnalignedHint,
}

/// What MPROTECT does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtectKind {
    /// Page-aligned start, known protection bits.
    Plain,
    /// Start not page aligned (EINVAL).
    UnalignedStart,
    /// An unknown protection bit (EINVAL).
    UnknownBits,
}

/// What one EENTER does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnterAction {
    /// EENTER, EEXIT straight back.
    Exit,
    /// EENTER, EACCEPT page `page` with SECINFO `secinfo` of the program's table, EEXIT.
    Accept { secinfo: u8, page: u16 },
    /// `function` outside EENTER..=ERESUME: the vDSO returns -EINVAL.
    BadLeaf(u32),
    /// A non-zero reserved byte in the run structure: -EINVAL.
    ReservedNonZero,
}

/// Operations on the enclave every thread shares, whose results may race (the accepted set is
/// the exact answer or, for ioctls, EBUSY from another thread's concurrent ioctl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedOp {
    /// EENTER on this thread's own TCS of the shared enclave, EEXIT.
    Enter,
    /// CREATE again (EINVAL).
    Create,
    /// ADD_PAGES after INIT (EINVAL).
    AddPages,
    /// INIT again (EINVAL).
    Init,
    /// PROVISION with a good descriptor (0).
    Provision,
    /// RESTRICT_PERMISSIONS on a hole (EFAULT, count 0) — or ENODEV without SGX2.
    RestrictHole,
    /// An unknown command (ENOTTY).
    Unknown,
}

/// One fuzzer operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "the fields are the syscall's inputs, documented on their types")]
pub enum Op {
    /// Opens `/dev/sgx_enclave` into an empty slot (after unmapping what a closed enclave left).
    Open { slot: u8, rdonly: bool },
    /// Adds a `dup` of the slot's descriptor.
    Dup { slot: u8 },
    /// Closes one of the slot's descriptors.
    Close { slot: u8, which: u8 },
    /// SGX_IOC_ENCLAVE_CREATE.
    Create { slot: u8, arg: ArgPtr, secs: SecsVariant, secs_ptr: ObjPtr, size_log2: u8, attrs: AttrVariant },
    /// SGX_IOC_ENCLAVE_ADD_PAGES.
    AddPages {
        slot: u8,
        arg: ArgPtr,
        src: SrcVariant,
        shape: RangeShape,
        page: u16,
        npages: u8,
        secinfo: SecinfoVariant,
        flags: u64,
    },
    /// SGX_IOC_ENCLAVE_INIT.
    Init { slot: u8, arg: ArgPtr, sig: SigVariant },
    /// SGX_IOC_ENCLAVE_PROVISION.
    Provision { slot: u8, arg: ArgPtr, fd: ProvFd },
    /// SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS.
    Restrict { slot: u8, arg: ArgPtr, shape: RangeShape, page: u16, npages: u8, perms: u64, out: OutFields },
    /// SGX_IOC_ENCLAVE_MODIFY_TYPES.
    Modify { slot: u8, arg: ArgPtr, shape: RangeShape, page: u16, npages: u8, page_type: u64, out: OutFields },
    /// SGX_IOC_ENCLAVE_REMOVE_PAGES.
    Remove { slot: u8, arg: ArgPtr, shape: RangeShape, page: u16, npages: u8, out: OutFields },
    /// An ioctl number the driver does not know, or one the VFS handles itself.
    NearMiss { slot: u8, cmd: u32 },
    /// mmap of the enclave file.
    Mmap { slot: u8, page: u16, npages: u16, prot: u8, kind: MapKind },
    /// mprotect of (part of) the slot's reservation.
    Mprotect { slot: u8, page: u16, npages: u16, prot: u8, kind: ProtectKind },
    /// munmap (or an anonymous mapping over) part of the slot's reservation.
    Munmap { slot: u8, page: u16, npages: u16, overmap: bool },
    /// `__vdso_sgx_enter_enclave` on the slot's enclave, TCS number `tcs`.
    Enter { slot: u8, tcs: u8, action: EnterAction },
    /// An operation on the shared enclave.
    Shared(SharedOp),
}

impl Op {
    /// A short name of the operation's kind (minimisation keeps failures of the same kind).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Open { .. } => "open",
            Op::Dup { .. } => "dup",
            Op::Close { .. } => "close",
            Op::Create { .. } => "create",
            Op::AddPages { .. } => "add_pages",
            Op::Init { .. } => "init",
            Op::Provision { .. } => "provision",
            Op::Restrict { .. } => "restrict_permissions",
            Op::Modify { .. } => "modify_types",
            Op::Remove { .. } => "remove_pages",
            Op::NearMiss { .. } => "near_miss_ioctl",
            Op::Mmap { .. } => "mmap",
            Op::Mprotect { .. } => "mprotect",
            Op::Munmap { .. } => "munmap",
            Op::Enter { .. } => "enter",
            Op::Shared(_) => "shared",
        }
    }
}

/// The page layout of every enclave the fuzzer builds to run (`enclave_program`): the code
/// page, then per thread a TCS and its two SSA frames.
pub mod layout {
    /// The code page (R|X) holding the program and the EACCEPT SECINFO table.
    pub const CODE_PAGE: u16 = 0;
    /// SSA frames per TCS.
    pub const NSSA: u16 = 2;
    /// The TCS page of thread `i`.
    pub const fn tcs_page(i: u16) -> u16 {
        1 + i * (1 + NSSA)
    }
}

/// `count` operations for thread `stream` of a campaign with `seed`.
pub fn generate(seed: u64, stream: u64, count: usize, sgx2: bool) -> Vec<Op> {
    let mut rng = Rng::new(seed, stream);
    let mut ops = Vec::with_capacity(count + 16);
    while ops.len() < count {
        let slot = rng.below(u64::from(SLOTS)) as u8;
        if rng.chance(4) {
            build(&mut rng, slot, sgx2, &mut ops);
        } else {
            ops.push(one(&mut rng, slot, sgx2));
        }
    }
    ops.truncate(count);
    ops
}

/// A valid build: open, create, the program's pages, INIT, and mappings with the pages'
/// permissions — each step its own operation, so minimisation can drop any of them.
fn build(rng: &mut Rng, slot: u8, sgx2: bool, ops: &mut Vec<Op>) {
    let threads = 1 + rng.below(2) as u16;
    let attrs = rng.pick(&[
        AttrVariant::Plain,
        AttrVariant::Plain,
        AttrVariant::Debug,
        AttrVariant::Kss,
        AttrVariant::ProvisionKey,
    ]);
    let size_log2 = rng.pick(&[15, 16, 16, 18, 20, 22]);
    ops.push(Op::Open { slot, rdonly: false });
    ops.push(Op::Create {
        slot,
        arg: ArgPtr::Valid,
        secs: SecsVariant::Valid,
        secs_ptr: ObjPtr::Valid,
        size_log2,
        attrs,
    });
    let add = |src, page, npages, secinfo, flags| Op::AddPages {
        slot,
        arg: ArgPtr::Valid,
        src,
        shape: RangeShape::Pages,
        page,
        npages,
        secinfo,
        flags,
    };
    ops.push(add(SrcVariant::Code, layout::CODE_PAGE, 1, SecinfoVariant::Reg(5), 1));
    for t in 0..threads {
        let tcs = layout::tcs_page(t);
        ops.push(add(SrcVariant::Tcs, tcs, 1, SecinfoVariant::Tcs, 1));
        ops.push(add(SrcVariant::Zero, tcs + 1, layout::NSSA as u8, SecinfoVariant::Reg(3), rng.below(2)));
    }
    let data = layout::tcs_page(threads);
    if rng.chance(60) {
        let perms = rng.pick(&[3, 3, 7]);
        ops.push(add(
            SrcVariant::Pattern(rng.below(256) as u8),
            data,
            1 + rng.below(4) as u8,
            SecinfoVariant::Reg(perms),
            rng.below(2),
        ));
    }
    // Bulk: 4 MiB enclaves sometimes get up to 640 more pages, so that the threads' enclaves
    // together outgrow an 8 MiB EPC and the reclaimer (EWB, ELDU) takes part.
    if size_log2 == 22 && rng.chance(70) {
        let runs = 8 + rng.below(33) as u16;
        for k in 0..runs {
            ops.push(add(SrcVariant::Zero, 64 + 16 * k, 16, SecinfoVariant::Reg(3), 0));
        }
    }
    if attrs == AttrVariant::ProvisionKey {
        ops.push(Op::Provision { slot, arg: ArgPtr::Valid, fd: ProvFd::Provision });
    }
    ops.push(Op::Init { slot, arg: ArgPtr::Valid, sig: SigVariant::Valid });
    let map = |page, npages, prot| Op::Mmap { slot, page, npages, prot, kind: MapKind::SharedFixed };
    ops.push(map(layout::CODE_PAGE, 1, 5));
    ops.push(map(1, data - 1, 3));
    // The rest of ELRANGE read-write (holes are unrestricted; SGX2 EAUGs there).
    let size_pages = 1u16 << (size_log2 - 12);
    ops.push(map(data, size_pages.min(64) - data, 3));
    for _ in 0..1 + rng.below(3) {
        ops.push(Op::Enter { slot, tcs: rng.below(u64::from(threads)) as u8, action: enter_action(rng, sgx2) });
    }
}

/// A page number: mostly inside the small layouts, sometimes anywhere in a 1 MiB ELRANGE or
/// beyond it.
fn page(rng: &mut Rng) -> u16 {
    match rng.below(10) {
        0..=6 => rng.below(12) as u16,
        7..=8 => rng.below(64) as u16,
        _ => rng.below(512) as u16,
    }
}

/// A page count: mostly one, sometimes a few, and sometimes up to 16 (the source area), so
/// that the threads' enclaves together outgrow an 8 MiB EPC and the reclaimer runs.
fn npages(rng: &mut Rng) -> u8 {
    match rng.below(10) {
        0..=6 => 1,
        7..=8 => 1 + rng.below(6) as u8,
        _ => 8 + rng.below(9) as u8,
    }
}

fn arg_ptr(rng: &mut Rng) -> ArgPtr {
    if rng.chance(88) {
        ArgPtr::Valid
    } else {
        rng.pick(&[
            ArgPtr::Null,
            ArgPtr::Kernel,
            ArgPtr::ProtNone,
            ArgPtr::Straddle,
            ArgPtr::ReadOnly,
            ArgPtr::ReadOnly,
        ])
    }
}

fn obj_ptr(rng: &mut Rng) -> ObjPtr {
    rng.pick(&[ObjPtr::ReadOnly, ObjPtr::Null, ObjPtr::Kernel, ObjPtr::ProtNone, ObjPtr::Straddle])
}

fn shape(rng: &mut Rng) -> RangeShape {
    if rng.chance(85) {
        RangeShape::Pages
    } else {
        rng.pick(&[
            RangeShape::UnalignedOffset,
            RangeShape::ZeroLength,
            RangeShape::UnalignedLength,
            RangeShape::Overflow,
        ])
    }
}

fn out_fields(rng: &mut Rng) -> OutFields {
    if rng.chance(90) { OutFields::Zero } else { rng.pick(&[OutFields::Result, OutFields::Count]) }
}

fn enter_action(rng: &mut Rng, sgx2: bool) -> EnterAction {
    match rng.below(10) {
        0 => EnterAction::BadLeaf(rng.pick(&[0, 1, 4, 5, 0xFFFF_FFFF])),
        1 => EnterAction::ReservedNonZero,
        2..=5 if sgx2 => EnterAction::Accept { secinfo: rng.below(7) as u8, page: page(rng) },
        _ => EnterAction::Exit,
    }
}

/// The ioctl numbers a near-miss picks from: each SGX command with its direction, size,
/// type or number changed, and the VFS's own file ioctls.
fn near_miss_cmd(rng: &mut Rng) -> u32 {
    use sgxemu_uapi::*;
    let base = rng.pick(&[
        SGX_IOC_ENCLAVE_CREATE,
        SGX_IOC_ENCLAVE_ADD_PAGES,
        SGX_IOC_ENCLAVE_INIT,
        SGX_IOC_ENCLAVE_PROVISION,
        SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
        SGX_IOC_ENCLAVE_MODIFY_TYPES,
        SGX_IOC_ENCLAVE_REMOVE_PAGES,
    ]);
    match rng.below(9) {
        0 => base ^ (rng.pick(&[1u32, 2, 3]) << 30),       // direction bits
        1 => base ^ (rng.pick(&[8u32, 16, 0x3F00]) << 16), // size field
        2 => (base & !0xFF00) | (rng.pick(&[0xA3u32, 0xA5, 0x00, 0xA6]) << 8), // type byte
        3 => (base & !0xFF) | rng.pick(&[8u32, 9, 0x80, 0xFF]), // command number
        4 => SGX_IOC_VEPC_REMOVE_ALL,
        5 => rng.pick(&[0x5401u32, 0x541B, 0x5460]), // TCGETS, FIONREAD, FIOQSIZE
        _ => rng.pick(&[0x5451u32, 0x5450, 0x5421, 0x5452, 2]), // FIOCLEX, FIONCLEX, FIONBIO, FIOASYNC, FIGETBSZ
    }
}

/// One random operation on `slot`.
fn one(rng: &mut Rng, slot: u8, sgx2: bool) -> Op {
    match rng.below(100) {
        0..=3 => Op::Open { slot, rdonly: rng.chance(10) },
        4..=5 => Op::Dup { slot },
        6..=8 => Op::Close { slot, which: rng.below(4) as u8 },
        9..=14 => {
            let secs = if rng.chance(60) {
                SecsVariant::Valid
            } else {
                rng.pick(&[
                    SecsVariant::SizeNotPow2,
                    SecsVariant::SizeZero,
                    SecsVariant::Size2p63,
                    SecsVariant::SizeOnePage,
                    SecsVariant::SizeHuge,
                    SecsVariant::BaseMisaligned,
                    SecsVariant::SsaZero,
                    SecsVariant::XfrmZero,
                    SecsVariant::AttrInit,
                    SecsVariant::AttrReserved,
                    SecsVariant::NoMode64,
                    SecsVariant::ReservedField,
                ])
            };
            let secs_ptr = if rng.chance(90) { ObjPtr::Valid } else { obj_ptr(rng) };
            let attrs = rng.pick(&[
                AttrVariant::Plain,
                AttrVariant::Debug,
                AttrVariant::ProvisionKey,
                AttrVariant::EinitTokenKey,
                AttrVariant::Kss,
            ]);
            Op::Create {
                slot,
                arg: arg_ptr(rng),
                secs,
                secs_ptr,
                size_log2: rng.pick(&[13, 14, 15, 16, 18, 20, 22]),
                attrs,
            }
        }
        15..=29 => {
            let (ty, bit, ptr, byte, k) = (
                rng.pick(&[0, 3, 4, 0xFF]),
                rng.pick(&[3, 4, 5, 6, 16, 63]),
                obj_ptr(rng),
                rng.below(256) as u8,
                rng.below(3) as u8,
            );
            let secinfo = if rng.chance(75) {
                if rng.chance(80) { SecinfoVariant::Reg(rng.pick(&[1, 3, 5, 7, 3, 2])) } else { SecinfoVariant::Tcs }
            } else {
                rng.pick(&[
                    SecinfoVariant::TcsWithPerms,
                    SecinfoVariant::Type(ty),
                    SecinfoVariant::FlagBit(bit),
                    SecinfoVariant::ReservedByte,
                    SecinfoVariant::Ptr(ptr),
                ])
            };
            let src = if rng.chance(75) {
                rng.pick(&[SrcVariant::Zero, SrcVariant::Pattern(byte), SrcVariant::Tcs, SrcVariant::Code])
            } else {
                rng.pick(&[
                    SrcVariant::ReadOnly,
                    SrcVariant::Unaligned,
                    SrcVariant::ProtNoneAt(k),
                    SrcVariant::ExecOnly,
                    SrcVariant::Kernel,
                ])
            };
            let flags = rng.pick(&[0, 1, 1, 0x100, 0xFFFF_FFFF_FFFF_FFFE]);
            Op::AddPages {
                slot,
                arg: arg_ptr(rng),
                src,
                shape: shape(rng),
                page: page(rng),
                npages: npages(rng),
                secinfo,
                flags,
            }
        }
        30..=35 => {
            let ptr = obj_ptr(rng);
            let sig = if rng.chance(70) {
                SigVariant::Valid
            } else {
                rng.pick(&[
                    SigVariant::BadVendor,
                    SigVariant::BadSignature,
                    SigVariant::ReservedAttribute,
                    SigVariant::ReservedMisc,
                    SigVariant::ReservedXfrm,
                    SigVariant::Ptr(ptr),
                ])
            };
            Op::Init { slot, arg: arg_ptr(rng), sig }
        }
        36..=38 => {
            let fd = rng.pick(&[
                ProvFd::Provision,
                ProvFd::ProvisionHighBits,
                ProvFd::Minus1,
                ProvFd::Closed,
                ProvFd::DevNull,
                ProvFd::Enclave,
            ]);
            Op::Provision { slot, arg: arg_ptr(rng), fd }
        }
        39..=45 => {
            let perms = if rng.chance(85) { rng.pick(&[0, 1, 3, 5, 7, 1]) } else { rng.pick(&[2, 8, 0x100]) };
            Op::Restrict {
                slot,
                arg: arg_ptr(rng),
                shape: shape(rng),
                page: page(rng),
                npages: npages(rng),
                perms,
                out: out_fields(rng),
            }
        }
        46..=53 => {
            let page_type = if rng.chance(85) { rng.pick(&[1, 4, 4]) } else { rng.pick(&[0, 2, 3, 0x104]) };
            Op::Modify {
                slot,
                arg: arg_ptr(rng),
                shape: shape(rng),
                page: page(rng),
                npages: npages(rng),
                page_type,
                out: out_fields(rng),
            }
        }
        54..=59 => Op::Remove {
            slot,
            arg: arg_ptr(rng),
            shape: shape(rng),
            page: page(rng),
            npages: npages(rng),
            out: out_fields(rng),
        },
        60..=63 => Op::NearMiss { slot, cmd: near_miss_cmd(rng) },
        64..=70 => {
            let kind = if rng.chance(75) {
                rng.pick(&[MapKind::SharedFixed, MapKind::SharedFixed, MapKind::SharedValidateFixed])
            } else {
                rng.pick(&[
                    MapKind::Private,
                    MapKind::Anywhere,
                    MapKind::ZeroLength,
                    MapKind::FixedNoReplace,
                    MapKind::UnalignedOffset,
                    MapKind::UnalignedHint,
                ])
            };
            Op::Mmap {
                slot,
                page: page(rng),
                npages: 1 + rng.below(16) as u16,
                prot: rng.pick(&[0, 1, 3, 5, 7, 3, 2]),
                kind,
            }
        }
        71..=75 => {
            let kind = if rng.chance(90) {
                ProtectKind::Plain
            } else {
                rng.pick(&[ProtectKind::UnalignedStart, ProtectKind::UnknownBits])
            };
            Op::Mprotect {
                slot,
                page: page(rng),
                npages: 1 + rng.below(8) as u16,
                prot: rng.pick(&[0, 1, 3, 5, 7]),
                kind,
            }
        }
        76..=78 => Op::Munmap { slot, page: page(rng), npages: 1 + rng.below(16) as u16, overmap: rng.chance(50) },
        79..=91 => Op::Enter { slot, tcs: rng.below(2) as u8, action: enter_action(rng, sgx2) },
        _ => Op::Shared(rng.pick(&[
            SharedOp::Enter,
            SharedOp::Enter,
            SharedOp::Create,
            SharedOp::AddPages,
            SharedOp::Init,
            SharedOp::Provision,
            SharedOp::RestrictHole,
            SharedOp::Unknown,
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_a_function_of_seed_and_thread() {
        assert_eq!(generate(1, 0, 500, true), generate(1, 0, 500, true));
        assert_ne!(generate(1, 0, 500, true), generate(1, 1, 500, true));
        assert_eq!(generate(3, 2, 777, false).len(), 777);
    }

    #[test]
    fn every_kind_of_operation_is_generated() {
        let ops = generate(5, 0, 20_000, true);
        for kind in [
            "open",
            "dup",
            "close",
            "create",
            "add_pages",
            "init",
            "provision",
            "restrict_permissions",
            "modify_types",
            "remove_pages",
            "near_miss_ioctl",
            "mmap",
            "mprotect",
            "munmap",
            "enter",
            "shared",
        ] {
            assert!(ops.iter().any(|op| op.kind() == kind), "{kind}");
        }
    }
}
