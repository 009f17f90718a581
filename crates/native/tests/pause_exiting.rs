//! Pause-loop exiting (`SGXEMU_PAUSE_EXITING=1`), in a test binary of its own: the setting
//! is read once per process, at the first enclave entry.

mod support;

use support::enclave::{PAGE, TEXT, TestEnclave, op};

/// With `SGXEMU_PAUSE_EXITING=1` every PAUSE of enclave code traps after the first entry: the
/// EPC holds `hlt` (a #GP in user mode) where the image had PAUSE's first byte, the
/// emulator knows each site, and the code still works.
#[test]
fn pause_in_enclave_code_is_patched_to_trap_and_still_pauses() {
    use std::sync::atomic::AtomicU64;
    // SAFETY: set before any other thread of this test binary (its only test) exists that
    // could read the environment.
    unsafe { std::env::set_var(sgxemu_native::config::ENV_PAUSE_EXITING, "1") };
    let e = TestEnclave::load(1 << 20);
    let engine = support::enclave::engine();
    let (release, rounds) = (AtomicU64::new(1), AtomicU64::new(0));
    e.call(1, op::PAUSE_UNTIL, &release as *const AtomicU64 as u64, &rounds as *const AtomicU64 as u64, 0, 0);
    // The text page the loop is on (the second one may not be mapped yet).
    let mut text = vec![0u8; PAGE as usize];
    assert!(engine.read_mapped(e.base + TEXT, &mut text));
    let sites: Vec<u64> = (0..text.len() as u64 - 1)
        .map(|i| e.base + TEXT + i)
        .filter(|&at| sgxemu_native::patch::is_pause(engine, at))
        .collect();
    assert!(!sites.is_empty(), "the test enclave's PAUSEs");
    for at in &sites {
        let i = (at - e.base - TEXT) as usize;
        assert_eq!(text[i..i + 2], [sgxemu_native::patch::TRAP, 0x90], "hlt at {at:#x}");
    }
    assert!(!text.windows(2).any(|w| w == [0xf3, 0x90]), "no PAUSE left in the text");
    // The patched PAUSE loop still runs and ends (with a pause loop now yielding).
    let (release, rounds) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            e.call(2, op::PAUSE_UNTIL, &release as *const AtomicU64 as u64, &rounds as *const AtomicU64 as u64, 0, 0)
        });
        while rounds.load(std::sync::atomic::Ordering::Acquire) < 1000 {
            std::thread::yield_now();
        }
        release.store(1, std::sync::atomic::Ordering::Release);
    });
}
