//! `sgxemu-uapi-fuzz`: see the library's documentation.

fn main() -> std::process::ExitCode {
    let code = sgxemu_fuzz::cli::main(std::env::args().skip(1));
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
