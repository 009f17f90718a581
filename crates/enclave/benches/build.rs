//! Enclave build throughput: loading a fully measured 256 MiB image through the library and
//! the in-process emulator (ECREATE, ADD_PAGES with SGX_PAGE_MEASURE — one EADD and sixteen
//! EEXTENDs per page —, EINIT, mmap), in MB/s of image, as a ratio to raw SHA-256 over the
//! identical measured record stream hashed in the same run (goal ≥ 0.7×).
//!
//! `cargo bench -p sgxemu-enclave --features emulator --bench build [-- --quick]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use sgxemu_arch::{PAGE_SIZE, PageType, SecinfoFlags as F};
use sgxemu_crypto::SigningKey;
use sgxemu_enclave::{Device, Enclave, EnclaveImage, ImagePage, PageData, SigstructFields};
use sha2::{Digest, Sha256};

const PAGE: u64 = PAGE_SIZE as u64;

/// An image of `pages` measured RW pages, each with distinct contents.
fn image(pages: u64) -> EnclaveImage {
    let flags = (F::R | F::W).with_page_type(PageType::Reg);
    let pages: Vec<ImagePage> = (0..pages)
        .map(|i| {
            let mut data = Box::new([0u8; PAGE_SIZE]);
            for (k, word) in data.chunks_exact_mut(8).enumerate() {
                word.copy_from_slice(&(i * 512 + k as u64).to_le_bytes());
            }
            ImagePage::single(i * PAGE, flags, PageData::Bytes(data), true)
        })
        .collect();
    EnclaveImage::of_pages(pages)
}

/// The record stream EINIT's MRENCLAVE hashes for `image`.
fn record_stream(image: &EnclaveImage) -> Vec<u8> {
    let mut stream = Vec::with_capacity(image.page_count() as usize * (64 + 16 * 320) + 64);
    stream.extend_from_slice(&sgxemu_crypto::ecreate_record(image.ssaframesize, image.size));
    for page in &image.pages {
        stream.extend_from_slice(&sgxemu_crypto::eadd_record(page.offset, page.flags.bits()));
        for (i, chunk) in page.data.bytes().chunks_exact(256).enumerate() {
            stream.extend_from_slice(&sgxemu_crypto::eextend_record(page.offset + 256 * i as u64));
            stream.extend_from_slice(chunk);
        }
    }
    stream
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (mib, runs) = if quick { (32, 2) } else { (256, 3) };
    let pages = mib * (1 << 20) / PAGE;
    let device =
        Device::emulated_with(sgxemu_native::PlatformConfig { epc_size: (2 * mib) << 20, ..Default::default() })
            .expect("the in-process emulator");
    let image = image(pages);
    // A fixed key: generating one takes longer than the benchmark's subject.
    let key = SigningKey::from_pem(include_str!("../../cpu/src/testkit/test-key.pem")).expect("the test key");
    let sig = sgxemu_enclave::sign_image(&image, &SigstructFields::for_image(&image), &key).expect("signed");
    let stream = record_stream(&image);
    let bytes = (pages * PAGE) as f64;

    let mut ours = Duration::MAX;
    let mut floor = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        let enclave = Enclave::load(&device, &image, &sig, &mut |_| {}).expect("the image loads");
        ours = ours.min(start.elapsed());
        drop(enclave);
        let start = Instant::now();
        black_box(Sha256::digest(black_box(&stream)));
        floor = floor.min(start.elapsed());
    }
    let mbps = |d: Duration| bytes / d.as_secs_f64() / 1e6;
    println!("\n| benchmark | sgxemu | floor (same run) | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| enclave build, {mib} MiB measured (EADD+EEXTEND, EINIT) | {:.0} MB/s of image | {:.0} MB/s (raw SHA-256 of the {:.0} MB record stream) | {:.2}x | >= 0.7x |",
        mbps(ours),
        mbps(floor),
        stream.len() as f64 / 1e6,
        floor.as_secs_f64() / ours.as_secs_f64()
    );
}
