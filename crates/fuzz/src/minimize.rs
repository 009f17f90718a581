//! The supervisor: runs a campaign in a child process (so that a crash or a hang is an
//! observable outcome, not the end of the fuzzer), and when it fails, replays the failing
//! thread's operations alone in fresh children and shrinks them by delta debugging to a
//! minimal sequence that still fails the same way.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::campaign::{Config, EXIT_HANG, EXIT_MISMATCH};

/// How a child run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No mismatch, crash or hang.
    Clean,
    /// An errno (or vDSO/EACCEPT) mismatch at `thread`'s operation `index`, of `kind`.
    Mismatch { thread: u16, index: usize, kind: String },
    /// A thread stopped making progress at operation `index`.
    Hang { thread: Option<u16>, index: Option<usize> },
    /// Killed by a signal (or an abort).
    Crash { signal: Option<i32> },
    /// Could not run (setup error, unexpected status).
    Error(String),
}

impl Outcome {
    fn same_failure(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Mismatch { kind: a, .. }, Outcome::Mismatch { kind: b, .. }) => a == b,
            (Outcome::Hang { .. }, Outcome::Hang { .. }) => true,
            (Outcome::Crash { .. }, Outcome::Crash { .. }) => true,
            _ => false,
        }
    }
}

/// The result of a child run: how it ended and what it printed.
#[derive(Debug)]
pub struct ChildRun {
    /// The outcome.
    pub outcome: Outcome,
    /// stdout and stderr.
    pub output: String,
}

/// The arguments that make a worker child run `config`.
fn worker_args(config: &Config, keep_file: Option<&PathBuf>) -> Vec<String> {
    let mut args = vec![
        "--worker".to_owned(),
        format!("--seed={}", config.seed),
        format!("--ops={}", config.ops),
        format!("--threads={}", config.threads),
        format!("--hang-secs={}", config.hang_secs),
        if config.sgx2 { "--sgx2".to_owned() } else { "--sgx1".to_owned() },
    ];
    if let Some(t) = config.replay_thread {
        args.push(format!("--replay-thread={t}"));
    }
    if let Some(file) = keep_file {
        args.push(format!("--keep-file={}", file.display()));
    }
    args
}

/// Parses `key=value` out of a FAIL line.
fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_end_matches(':'))
        .and_then(|v| v.parse().ok())
}

/// Runs a worker child for `config` (with the operations of `keep`, if given).
pub fn run_child(config: &Config, keep: Option<&[usize]>) -> ChildRun {
    let keep_file = keep.map(|indices| {
        let path = std::env::temp_dir().join(format!("sgxemu-uapi-fuzz-{}-keep", std::process::id()));
        let mut file = std::fs::File::create(&path).expect("a temporary file");
        for i in indices {
            writeln!(file, "{i}").expect("writing the keep file");
        }
        path
    });
    let exe = std::env::current_exe().expect("the fuzzer's own path");
    let child = Command::new(exe)
        .args(worker_args(config, keep_file.as_ref()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return ChildRun {
                outcome: Outcome::Error(format!("cannot start the worker: {e}")),
                output: String::new(),
            };
        }
    };
    // The child's own watchdog reports hangs; this is the backstop for a child that cannot.
    let deadline = Instant::now() + Duration::from_secs(config.hang_secs * 2 + 60);
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let out_reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err_reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let output = out_reader.join().unwrap_or_default() + &err_reader.join().unwrap_or_default();
    if let Some(path) = keep_file {
        let _ = std::fs::remove_file(path);
    }
    let fail_line = output.lines().find(|l| l.starts_with("FAIL ")).unwrap_or("");
    use std::os::unix::process::ExitStatusExt;
    let outcome = match status {
        None => Outcome::Hang { thread: None, index: None },
        Some(s) if s.success() => Outcome::Clean,
        Some(s) if s.code() == Some(EXIT_MISMATCH) => Outcome::Mismatch {
            thread: field(fail_line, "thread").unwrap_or(0),
            index: field(fail_line, "op").unwrap_or(0),
            kind: field(fail_line, "kind").unwrap_or_default(),
        },
        Some(s) if s.code() == Some(EXIT_HANG) => {
            Outcome::Hang { thread: field(fail_line, "thread"), index: field(fail_line, "op") }
        }
        Some(s) if s.signal().is_some() => Outcome::Crash { signal: s.signal() },
        // An abort inside the emulator may surface as its own exit status.
        Some(s) if s.code() == Some(134) || s.code() == Some(139) => Outcome::Crash { signal: None },
        Some(s) => Outcome::Error(format!("worker exited with {s}")),
    };
    ChildRun { outcome, output }
}

/// Delta debugging (Zeller's ddmin): the smallest sub-list of `items` (1-minimal, within
/// `budget` tests) for which `fails` still holds.
pub fn ddmin(items: Vec<usize>, budget: usize, mut fails: impl FnMut(&[usize]) -> bool) -> Vec<usize> {
    let mut current = items;
    let mut n = 2usize;
    let mut tests = 0;
    while current.len() >= 2 && tests < budget {
        let chunk = current.len().div_ceil(n);
        let chunks: Vec<Vec<usize>> = current.chunks(chunk).map(<[usize]>::to_vec).collect();
        let mut reduced = false;
        for c in &chunks {
            tests += 1;
            if tests > budget {
                break;
            }
            if fails(c) {
                current = c.clone();
                n = 2;
                reduced = true;
                break;
            }
        }
        if !reduced && chunks.len() > 2 {
            for i in 0..chunks.len() {
                tests += 1;
                if tests > budget {
                    break;
                }
                let complement: Vec<usize> =
                    chunks.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, c)| c.iter().copied()).collect();
                if fails(&complement) {
                    current = complement;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
        }
        if !reduced {
            if n >= current.len() {
                break;
            }
            n = (n * 2).min(current.len());
        }
    }
    current
}

/// Shrinks a failure of `config` to a minimal single-thread operation sequence and prints it.
pub fn minimize(config: &Config, first: &Outcome) {
    let candidates: Vec<(u16, Option<usize>)> = match first {
        Outcome::Mismatch { thread, index, .. } => vec![(*thread, Some(*index))],
        Outcome::Hang { thread: Some(t), index } => vec![(*t, *index)],
        _ => (0..config.threads).map(|t| (t, None)).collect(),
    };
    for (thread, index) in candidates {
        let replay = Config { replay_thread: Some(thread), keep: None, ..config.clone() };
        let len = replay.stream_len(thread);
        let prefix: Vec<usize> = (0..index.map_or(len, |i| i + 1)).collect();
        let run = run_child(&replay, Some(&prefix));
        if !run.outcome.same_failure(first) {
            println!("thread {thread}: replaying its {} operations alone gives {:?}", prefix.len(), run.outcome);
            continue;
        }
        println!("thread {thread} fails alone too; minimising {} operations …", prefix.len());
        let mut tests = 0;
        let minimal = ddmin(prefix, 300, |keep| {
            tests += 1;
            run_child(&replay, Some(keep)).outcome.same_failure(first)
        });
        let last = run_child(&replay, Some(&minimal));
        let ops = replay.stream(thread);
        println!(
            "minimal sequence ({} operations, {tests} replays) — seed {} threads {} sgx{} thread {thread}:",
            minimal.len(),
            config.seed,
            config.threads,
            if config.sgx2 { 2 } else { 1 }
        );
        for i in &minimal {
            println!("  [{i}] {:?}", ops[*i].1);
        }
        println!("its replay: {:?}", last.outcome);
        for line in last.output.lines().filter(|l| l.starts_with("FAIL ") || l.starts_with("  ")) {
            println!("  {line}");
        }
        let keep: Vec<String> = minimal.iter().map(usize::to_string).collect();
        println!(
            "replay: printf '{}\\n' > keep && sgxemu run --epc 8M{} -- sgxemu-uapi-fuzz --worker --seed={} --ops={} --threads={} --{} --replay-thread={thread} --keep-file=keep",
            keep.join("\\n"),
            if config.sgx2 { "" } else { " --sgx1" },
            config.seed,
            config.ops,
            config.threads,
            if config.sgx2 { "sgx2" } else { "sgx1" }
        );
        return;
    }
    println!(
        "the failure does not reproduce in one thread: it needs the race (seed {} threads {})",
        config.seed, config.threads
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_the_two_operations_that_matter() {
        let items: Vec<usize> = (0..100).collect();
        let minimal = ddmin(items, 1000, |keep| keep.contains(&17) && keep.contains(&63));
        assert_eq!(minimal, vec![17, 63]);
    }

    #[test]
    fn fail_lines_parse() {
        let line = "FAIL mismatch seed=3 threads=4 thread=2 op=117 kind=add_pages: kernel answers …";
        assert_eq!(field::<u16>(line, "thread"), Some(2));
        assert_eq!(field::<usize>(line, "op"), Some(117));
        assert_eq!(field::<String>(line, "kind"), Some("add_pages".to_owned()));
    }
}
