use sgxemu_driver::sim::{Machine, TestEnclave};
use sgxemu_uapi::{EENTER, EEXIT};

#[test]
fn load_put_get() {
    let m = Machine::with_epc(16 << 20);
    let p = m.process();
    let mut t = m.thread(&p);
    let e = TestEnclave::load(&mut t, 4096).unwrap();
    let exit = t.enter(e.tcs1(), EENTER, Some(e.put_to_buffer(0x1234_5678)));
    assert!(exit.exited(), "{exit:?}");
    let exit = t.enter(e.tcs1(), EENTER, Some(e.get_from_buffer()));
    assert_eq!(exit.run.function, EEXIT);
    assert_eq!(exit.results, vec![0x1234_5678]);
    assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
}
