//! The command line of `sgxemu-uapi-fuzz` (also reached from the integration test, which
//! runs its own binary as the fuzzer).

use crate::campaign::{self, Config, EXIT_HANG, EXIT_MISMATCH, EXIT_SETUP};
use crate::known::KNOWN_MISMATCHES;
use crate::minimize::{self, Outcome};

const USAGE: &str =
    "usage: sgxemu-uapi-fuzz [--seed N] [--ops N] [--threads N] [--sgx1|--sgx2] [--hang-secs N] [--no-minimize]
  runs under `sgxemu run` (e.g. sgxemu run --epc 8M -- sgxemu-uapi-fuzz --ops 20000 --threads 4);
  --sgx1/--sgx2 says what the part is expected to be (default --sgx2)";

/// The command line.
struct Args {
    config: Config,
    worker: bool,
    minimize: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config =
        Config { seed: 1, ops: 20_000, threads: 1, sgx2: true, hang_secs: 60, replay_thread: None, keep: None };
    let (mut worker, mut minimize) = (false, true);
    let mut args = args;
    while let Some(arg) = args.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{key} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{key}: not a number: {v}"));
        match key.as_str() {
            "--seed" => config.seed = number(value()?)?,
            "--ops" => config.ops = number(value()?)?,
            "--threads" => config.threads = u16::try_from(number(value()?)?).map_err(|_| "--threads: too many")?,
            "--hang-secs" => config.hang_secs = number(value()?)?,
            "--sgx1" => config.sgx2 = false,
            "--sgx2" => config.sgx2 = true,
            "--worker" => worker = true,
            "--no-minimize" => minimize = false,
            "--replay-thread" => {
                config.replay_thread = Some(u16::try_from(number(value()?)?).map_err(|_| "--replay-thread")?)
            }
            "--keep-file" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                config.keep = Some(
                    text.split_whitespace()
                        .map(|w| w.parse().map_err(|_| format!("{path}: bad index {w}")))
                        .collect::<Result<_, _>>()?,
                );
            }
            "--help" | "-h" => return Err(USAGE.to_owned()),
            _ => return Err(format!("unknown argument {arg}\n{USAGE}")),
        }
    }
    if !(1..=8).contains(&config.threads) {
        return Err("--threads must be 1 to 8".to_owned());
    }
    if config.replay_thread.is_some_and(|t| t >= config.threads) {
        return Err("--replay-thread must be below --threads".to_owned());
    }
    Ok(Args { config, worker, minimize })
}

/// The worker: fuzz in this process and report.
fn worker(config: &Config) -> i32 {
    let report = match campaign::run(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sgxemu-uapi-fuzz: {e}");
            return EXIT_SETUP;
        }
    };
    let s = &report.stats;
    let secs = report.elapsed.as_secs_f64();
    let ops = s.executed + s.skipped;
    for (known, count) in &s.known {
        let example = s.known_example.get(known).map_or("", String::as_str);
        println!("known {known:?}: {count} (see known::KNOWN_MISMATCHES), first: {example}");
    }
    for (known, count) in &s.known_passed {
        if KNOWN_MISMATCHES.contains(known) {
            println!(
                "known {known:?} now gets the kernel's answer {count} times: remove it from KNOWN_MISMATCHES if it never differs"
            );
        }
    }
    let events: Vec<String> = s.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("reached: {}", events.join(", "));
    if let Some(f) = &report.failure {
        println!(
            "FAIL mismatch seed={} threads={} thread={} op={} kind={}: {}",
            config.seed,
            config.threads,
            f.thread,
            f.index,
            f.op.kind(),
            f.detail
        );
        println!("  {:?}", f.op);
    }
    println!(
        "worker: seed={} threads={} sgx{} ops={ops} executed={} skipped={} transient={} known={} time={secs:.2}s ops/s={:.0}{}",
        config.seed,
        config.threads,
        if config.sgx2 { 2 } else { 1 },
        s.executed,
        s.skipped,
        s.transient,
        s.known.values().sum::<u64>(),
        ops as f64 / secs.max(1e-9),
        if config.replay_thread.is_some() { " (replay)" } else { "" }
    );
    if report.failure.is_some() { EXIT_MISMATCH } else { 0 }
}

/// The supervisor: the campaign in a child process, then minimisation of a failure.
fn supervise(config: &Config, minimize: bool) -> i32 {
    let run = minimize::run_child(config, None);
    print!("{}", run.output);
    let (crashes, hangs, mismatches) = match run.outcome {
        Outcome::Clean => (0, 0, 0),
        Outcome::Mismatch { .. } => (0, 0, 1),
        Outcome::Hang { .. } => (0, 1, 0),
        Outcome::Crash { signal } => {
            println!("FAIL crash seed={} threads={}: the worker died (signal {signal:?})", config.seed, config.threads);
            (1, 0, 0)
        }
        Outcome::Error(ref e) => {
            eprintln!("sgxemu-uapi-fuzz: {e}");
            return EXIT_SETUP;
        }
    };
    let rate = run
        .output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("worker: "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("ops/s=")))
        .unwrap_or("?")
        .to_owned();
    println!(
        "sgxemu-uapi-fuzz: seed={} threads={} sgx{} ops={} ops/s={rate} crashes={crashes} hangs={hangs} mismatches={mismatches}",
        config.seed,
        config.threads,
        if config.sgx2 { 2 } else { 1 },
        config.ops
    );
    if run.outcome == Outcome::Clean {
        return 0;
    }
    if minimize {
        minimize::minimize(config, &run.outcome);
    }
    match run.outcome {
        Outcome::Hang { .. } => EXIT_HANG,
        _ => EXIT_MISMATCH,
    }
}

/// Runs the fuzzer with command-line arguments `args` (without the program name); the exit
/// status: 0 clean, 1 mismatch or crash, 2 setup error, 3 hang.
pub fn main(args: impl Iterator<Item = String>) -> i32 {
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sgxemu-uapi-fuzz: {e}");
            return EXIT_SETUP;
        }
    };
    if args.worker { worker(&args.config) } else { supervise(&args.config, args.minimize) }
}
