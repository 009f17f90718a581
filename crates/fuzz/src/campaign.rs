//! A fuzzing run inside one process: the shared enclave, one thread per stream, a watchdog
//! for hangs, and the counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ops::{self, Op};
use crate::shared::SharedEnclave;
use crate::sys::{self, Vdso};
use crate::world::{Stats, World};

/// Exit status of a run that found a mismatch.
pub const EXIT_MISMATCH: i32 = 1;
/// Exit status of a run that could not start (no device, bad arguments).
pub const EXIT_SETUP: i32 = 2;
/// Exit status of a run whose watchdog saw a thread make no progress.
pub const EXIT_HANG: i32 = 3;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The seed of every stream.
    pub seed: u64,
    /// Operations in all (split over the threads).
    pub ops: u64,
    /// Fuzzing threads.
    pub threads: u16,
    /// Whether the part has SGX2 (the oracle's expectation).
    pub sgx2: bool,
    /// Seconds without progress after which a thread counts as hung.
    pub hang_secs: u64,
    /// Replay only this thread's stream, alone …
    pub replay_thread: Option<u16>,
    /// … and only these operation indices of it.
    pub keep: Option<Vec<usize>>,
}

impl Config {
    /// Operations of stream `thread`.
    pub fn stream_len(&self, thread: u16) -> usize {
        let base = self.ops / u64::from(self.threads);
        let extra = u64::from(thread == 0) * (self.ops % u64::from(self.threads));
        (base + extra) as usize
    }

    /// Stream `thread`'s operations, with their indices.
    pub fn stream(&self, thread: u16) -> Vec<(usize, Op)> {
        let all = ops::generate(self.seed, u64::from(thread), self.stream_len(thread), self.sgx2);
        match &self.keep {
            Some(keep) => keep.iter().filter_map(|&i| all.get(i).map(|op| (i, *op))).collect(),
            None => all.into_iter().enumerate().collect(),
        }
    }
}

/// The first mismatch a run found.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Its thread.
    pub thread: u16,
    /// The operation's index in that thread's stream.
    pub index: usize,
    /// The operation.
    pub op: Op,
    /// Expected and actual answers.
    pub detail: String,
}

/// What a run came to.
#[derive(Debug)]
pub struct Report {
    /// Counts over all threads.
    pub stats: Stats,
    /// Wall time of the fuzzing itself.
    pub elapsed: Duration,
    /// The first mismatch, if any.
    pub failure: Option<Failure>,
}

/// Runs `config` in this process. Hangs end the process from the watchdog (status
/// [`EXIT_HANG`]) after printing where each thread stood.
pub fn run(config: &Config) -> Result<Report, String> {
    let vdso = Vdso::find().ok_or("no __vdso_sgx_enter_enclave in this process's vDSO (run under `sgxemu run`)")?;
    let shared = SharedEnclave::build(config.threads, &vdso)?;
    let threads: Vec<u16> = match config.replay_thread {
        Some(t) => vec![t],
        None => (0..config.threads).collect(),
    };
    let streams: Arc<Vec<Vec<(usize, Op)>>> = Arc::new(threads.iter().map(|&t| config.stream(t)).collect());
    let progress: Arc<Vec<AtomicU64>> = Arc::new(threads.iter().map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<Failure>>> = Arc::new(Mutex::new(None));
    let watchdog = spawn_watchdog(config, &threads, &streams, &progress, &finished);

    let started = Instant::now();
    let handles: Vec<_> = threads
        .iter()
        .enumerate()
        .map(|(slot, &thread)| {
            let (streams, progress, stop, failure) = (streams.clone(), progress.clone(), stop.clone(), failure.clone());
            let sgx2 = config.sgx2;
            std::thread::Builder::new()
                .name(format!("fuzz-{thread}"))
                .spawn(move || -> Result<Stats, String> {
                    let mut world = World::new(sgx2, vdso, shared, thread)?;
                    for (n, (index, op)) in streams[slot].iter().enumerate() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        progress[slot].store(n as u64 + 1, Ordering::Relaxed);
                        if let Err(mismatch) = world.step(op) {
                            stop.store(true, Ordering::Relaxed);
                            let mut first = failure.lock().expect("failure lock");
                            if first.is_none() {
                                *first = Some(Failure { thread, index: *index, op: *op, detail: mismatch.0 });
                            }
                            break;
                        }
                    }
                    world.teardown();
                    Ok(world.stats)
                })
                .expect("spawning a fuzzing thread")
        })
        .collect();
    let mut stats = Stats::default();
    let mut setup_error = None;
    for handle in handles {
        match handle.join().expect("a fuzzing thread panicked") {
            Ok(s) => stats.merge(&s),
            Err(e) => setup_error = Some(e),
        }
    }
    let elapsed = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    if let Some(e) = setup_error {
        return Err(e);
    }
    let failure = failure.lock().expect("failure lock").take();
    Ok(Report { stats, elapsed, failure })
}

/// A thread that ends the process when some fuzzing thread stops making progress.
fn spawn_watchdog(
    config: &Config,
    threads: &[u16],
    streams: &Arc<Vec<Vec<(usize, Op)>>>,
    progress: &Arc<Vec<AtomicU64>>,
    finished: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (streams, progress, finished) = (streams.clone(), progress.clone(), finished.clone());
    let threads = threads.to_vec();
    let (seed, total, hang) = (config.seed, config.threads, Duration::from_secs(config.hang_secs));
    std::thread::Builder::new()
        .name("fuzz-watchdog".into())
        .spawn(move || {
            let mut last: Vec<(u64, Instant)> = progress.iter().map(|p| (p.load(Ordering::Relaxed), Instant::now())).collect();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                for (slot, p) in progress.iter().enumerate() {
                    let now = p.load(Ordering::Relaxed);
                    let done = now as usize >= streams[slot].len();
                    if now != last[slot].0 || done {
                        last[slot] = (now, Instant::now());
                    } else if last[slot].1.elapsed() > hang && !finished.load(Ordering::Relaxed) {
                        let (index, op) = streams[slot][now.saturating_sub(1) as usize];
                        println!(
                            "FAIL hang seed={seed} threads={total} thread={} op={index} kind={}: no progress for {}s in {op:?}",
                            threads[slot],
                            op.kind(),
                            hang.as_secs()
                        );
                        sys::exit_now(EXIT_HANG);
                    }
                }
            }
        })
        .expect("spawning the watchdog")
}
