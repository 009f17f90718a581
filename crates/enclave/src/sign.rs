//! SIGSTRUCTs for images: every field settable, signed with an RSA-3072 e = 3 key (Q1/Q2
//! computed), and verified offline against an image with the checks EINIT makes.

use sgxemu_arch::{Attributes, AttributesFlags, Sigstruct, VENDOR_INTEL};
use sgxemu_crypto::{SignatureError, SigningKey};

use crate::image::EnclaveImage;

/// The fields of a SIGSTRUCT an enclave vendor chooses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigstructFields {
    /// 0, or 0x8086 for Intel-signed enclaves.
    pub vendor: u32,
    /// Build date as BCD `0xYYYYMMDD` (EINIT does not check it).
    pub date: u32,
    /// ISV product id (SECS.ISVPRODID after EINIT).
    pub isvprodid: u16,
    /// ISV security version number (SECS.ISVSVN after EINIT).
    pub isvsvn: u16,
    /// SECS.ATTRIBUTES the enclave must have (after masking).
    pub attributes: Attributes,
    /// Which attribute bits EINIT compares.
    pub attributemask: Attributes,
    /// SECS.MISCSELECT the enclave must have (after masking).
    pub miscselect: u32,
    /// Which MISCSELECT bits EINIT compares.
    pub miscmask: u32,
    /// Software-defined.
    pub swdefined: u32,
}

impl SigstructFields {
    /// The usual choice for `image`: its attributes and MISCSELECT, with masks that pin
    /// everything except XFRM's optional features and the DEBUG bit is pinned too (a debug
    /// signature does not load a production enclave).
    pub fn for_image(image: &EnclaveImage) -> SigstructFields {
        SigstructFields {
            vendor: 0,
            date: 0x2026_0101,
            isvprodid: 0,
            isvsvn: 0,
            attributes: image.attributes,
            // Every flag compared; XFRM: x87+SSE required, the rest as the image asks.
            attributemask: Attributes::new(AttributesFlags::from_bits_retain(!0), image.attributes.xfrm | 0x3),
            miscselect: image.miscselect,
            miscmask: !0,
            swdefined: 0,
        }
    }
}

/// Builds and signs the SIGSTRUCT for `image` with `fields`.
///
/// # Errors
/// The key's RSA failure (never for a key this crate accepted).
pub fn sign_image(
    image: &EnclaveImage,
    fields: &SigstructFields,
    key: &SigningKey,
) -> Result<Sigstruct, sgxemu_crypto::KeyError> {
    sign_measured(image.mrenclave(), fields, key)
}

/// [`sign_image`] for an image already measured (`mrenclave`, e.g. from
/// [`EnclaveImage::mrenclave_with_progress`]), so a large image is hashed once.
///
/// # Errors
/// The key's RSA failure (never for a key this crate accepted).
pub fn sign_measured(
    mrenclave: [u8; 32],
    fields: &SigstructFields,
    key: &SigningKey,
) -> Result<Sigstruct, sgxemu_crypto::KeyError> {
    let mut sig = Sigstruct::new_unsigned();
    sig.vendor = fields.vendor;
    sig.date = fields.date;
    sig.swdefined = fields.swdefined;
    sig.miscselect = fields.miscselect;
    sig.miscmask = fields.miscmask;
    sig.attributes = fields.attributes;
    sig.attributemask = fields.attributemask;
    sig.isvprodid = fields.isvprodid;
    sig.isvsvn = fields.isvsvn;
    sig.enclavehash = mrenclave;
    sgxemu_crypto::sign(&mut sig, key)?;
    Ok(sig)
}

/// Why a SIGSTRUCT does not fit an image (each is an EINIT failure on hardware).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MismatchError {
    /// The signature, Q1/Q2, modulus or exponent is wrong.
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
    /// The header, vendor or reserved fields are not what EINIT requires.
    #[error("malformed SIGSTRUCT: {0}")]
    Malformed(&'static str),
    /// ENCLAVEHASH is not the image's MRENCLAVE.
    #[error("SIGSTRUCT is for MRENCLAVE {signed}, the image measures {image}")]
    Measurement { signed: String, image: String },
    /// The image's attributes differ from the signed ones under the mask.
    #[error(
        "attributes {image:#x}/xfrm {image_xfrm:#x} do not match the signed {signed:#x}/{signed_xfrm:#x} under mask {mask:#x}/{mask_xfrm:#x}"
    )]
    Attributes { image: u64, image_xfrm: u64, signed: u64, signed_xfrm: u64, mask: u64, mask_xfrm: u64 },
    /// MISCSELECT differs under the mask.
    #[error("MISCSELECT {image:#x} does not match the signed {signed:#x} under mask {mask:#x}")]
    Miscselect { image: u32, signed: u32, mask: u32 },
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `sig` against `image` as EINIT will: well-formed, correctly signed, for this
/// MRENCLAVE, attributes and MISCSELECT. Returns MRSIGNER.
///
/// # Errors
/// The first check that fails.
pub fn verify_for_image(sig: &Sigstruct, image: &EnclaveImage) -> Result<[u8; 32], MismatchError> {
    verify_with_mrenclave(sig, image, &image.mrenclave())
}

/// [`verify_for_image`] with the image's MRENCLAVE already computed.
///
/// # Errors
/// The first check that fails.
pub fn verify_with_mrenclave(
    sig: &Sigstruct,
    image: &EnclaveImage,
    mrenclave: &[u8; 32],
) -> Result<[u8; 32], MismatchError> {
    check_form(sig)?;
    let verified = sgxemu_crypto::verify(sig)?;
    if sig.enclavehash != *mrenclave {
        return Err(MismatchError::Measurement { signed: hex(&sig.enclavehash), image: hex(mrenclave) });
    }
    let (a, s, m) = (image.attributes, sig.attributes, sig.attributemask);
    if a.flags & m.flags != s.flags & m.flags || a.xfrm & m.xfrm != s.xfrm & m.xfrm {
        return Err(MismatchError::Attributes {
            image: a.flags,
            image_xfrm: a.xfrm,
            signed: s.flags,
            signed_xfrm: s.xfrm,
            mask: m.flags,
            mask_xfrm: m.xfrm,
        });
    }
    if image.miscselect & sig.miscmask != sig.miscselect & sig.miscmask {
        return Err(MismatchError::Miscselect { image: image.miscselect, signed: sig.miscselect, mask: sig.miscmask });
    }
    Ok(verified.mrsigner)
}

/// The structural checks of EINIT's first steps.
fn check_form(sig: &Sigstruct) -> Result<(), MismatchError> {
    let fresh = Sigstruct::new_unsigned();
    if sig.header[..12] != fresh.header[..12] || sig.header2 != fresh.header2 {
        return Err(MismatchError::Malformed("HEADER/HEADER2 are not the SIGSTRUCT constants"));
    }
    if sig.vendor != 0 && sig.vendor != VENDOR_INTEL {
        return Err(MismatchError::Malformed("VENDOR is neither 0 nor 0x8086"));
    }
    if sig.reserved1 != [0; 84] || sig.reserved2 != [0; 2] || sig.reserved3 != [0; 16] || sig.reserved4 != [0; 12] {
        return Err(MismatchError::Malformed("reserved fields are not zero"));
    }
    Ok(())
}
