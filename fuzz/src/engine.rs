//! The fuzzing loop: pick a corpus entry, mutate it, feed it to the target inside
//! `catch_unwind`, and keep the input when the reader answered in a way not seen before.
//!
//! There is no coverage instrumentation (libFuzzer needs a nightly compiler, and this
//! project builds on stable): the feedback is the *answer*. An error message with its
//! numbers and quoted parts blanked out names the check that refused the file, so an
//! input that reaches a new check — or loads into a model of a new shape — joins the
//! corpus, and later mutations start from deeper inside the reader.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::mutate::{havoc, mutate_inside, unzip};
use crate::targets::{Outcome, Target};

/// How many distinct answers the corpus keeps at most, per thread.
const MAX_CORPUS: usize = 2048;

/// What one run counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Inputs fed to the reader.
    pub execs: u64,
    /// Inputs it read.
    pub loaded: u64,
    /// Inputs it refused with a typed error.
    pub refused: u64,
    /// Inputs it panicked on.
    pub panics: u64,
    /// Inputs that took longer than the time limit.
    pub timeouts: u64,
    /// Inputs that allocated more than the memory limit.
    pub memory: u64,
    /// The slowest input.
    pub slowest: Duration,
    /// The most one input allocated at once above what was live before it (bytes).
    pub peak_bytes: u64,
    /// Distinct answers (the corpus size at the end).
    pub answers: usize,
}

impl Stats {
    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &Stats) {
        self.execs += o.execs;
        self.loaded += o.loaded;
        self.refused += o.refused;
        self.panics += o.panics;
        self.timeouts += o.timeouts;
        self.memory += o.memory;
        self.slowest = self.slowest.max(o.slowest);
        self.peak_bytes = self.peak_bytes.max(o.peak_bytes);
        self.answers = self.answers.max(o.answers);
    }
}

/// An input worth keeping: it made the reader panic, run too long or allocate too much.
#[derive(Debug, Clone)]
pub struct Finding {
    /// `panic`, `timeout` or `memory`.
    pub kind: &'static str,
    /// The panic message, the time or the bytes.
    pub detail: String,
    /// The input.
    pub input: Vec<u8>,
}

/// How a run goes.
pub struct Config {
    /// Inputs to feed.
    pub execs: u64,
    /// The RNG seed: the same seed, seeds and target give the same inputs.
    pub seed: u64,
    /// An input slower than this is a timeout finding.
    pub time_limit: Duration,
    /// An input whose allocations peak above `base + per_byte × input length` is a memory
    /// finding: a reader must refuse a file that claims more than it holds before it
    /// allocates.
    pub memory_base: u64,
    /// See `memory_base`.
    pub memory_per_byte: u64,
}

/// Runs `f`, returning what it returned and the peak bytes it allocated (0 where unmeasured).
pub type Measure<'a> = &'a dyn Fn(&mut dyn FnMut()) -> u64;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the panic hook with one that records the message and place for
/// `take_panic_message` instead of printing it: a fuzzer panics on purpose a lot.
pub fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("{info}");
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
    }));
}

/// The last panic's message on this thread, from the quiet hook, else the payload.
fn take_panic_message(payload: &(dyn Any + Send)) -> String {
    LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// An answer with its particulars blanked: digits, and text in quotes or backticks.
pub fn signature(o: &Outcome) -> String {
    let (tag, text) = match o {
        Outcome::Loaded(s) => ("ok", s.as_str()),
        Outcome::Refused(s) => ("err", s.as_str()),
    };
    let mut out = String::from(tag);
    let mut quote = None;
    for ch in text.chars().take(160) {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '`' | '"' | '\'') => {
                quote = Some(ch);
                out.push('_');
            }
            (None, c) if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            (None, c) => out.push(c),
        }
    }
    out
}

/// Feeds one input to the target: its outcome (`Err` = a panic message), time and peak.
pub fn feed(t: &Target, input: &[u8], measure: Measure) -> (Result<Outcome, String>, Duration, u64) {
    let start = Instant::now();
    let mut result = None;
    let peak = measure(&mut || result = Some(catch_unwind(AssertUnwindSafe(|| (t.run)(input)))));
    let elapsed = start.elapsed();
    let outcome = match result {
        Some(Ok(o)) => Ok(o),
        Some(Err(payload)) => Err(take_panic_message(payload.as_ref())),
        None => Err("the measure did not run the input".into()),
    };
    (outcome, elapsed, peak)
}

/// Fuzzes `t` from `seeds`; `on_exec` sees every input before it runs (a watchdog keeps
/// it), `on_finding` every finding.
pub fn fuzz(
    t: &Target,
    seeds: &[Vec<u8>],
    cfg: &Config,
    measure: Measure,
    mut on_exec: impl FnMut(u64, &[u8]),
    mut on_finding: impl FnMut(Finding),
) -> Stats {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut stats = Stats::default();
    let mut seen = HashSet::new();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    // Indexes of the corpus entries that loaded: half the mutations start from one, since
    // a file that reads is the way into the deeper checks.
    let mut readable: Vec<usize> = Vec::new();
    // The seeds first, as they are: they set the answers a mutation must differ from.
    let mut queue: Vec<Vec<u8>> = seeds.to_vec();
    if queue.is_empty() {
        queue.push(Vec::new());
    }
    while stats.execs < cfg.execs {
        let input = match queue.pop() {
            Some(s) => s,
            None => next_input(t, &corpus, &readable, &mut rng),
        };
        on_exec(stats.execs, &input);
        let (outcome, elapsed, peak) = feed(t, &input, measure);
        stats.execs += 1;
        stats.slowest = stats.slowest.max(elapsed);
        stats.peak_bytes = stats.peak_bytes.max(peak);
        if elapsed > cfg.time_limit {
            stats.timeouts += 1;
            on_finding(Finding {
                kind: "timeout",
                detail: format!("{:.2} s", elapsed.as_secs_f64()),
                input: input.clone(),
            });
        }
        if peak > cfg.memory_base + cfg.memory_per_byte * input.len() as u64 {
            stats.memory += 1;
            on_finding(Finding { kind: "memory", detail: format!("{peak} bytes"), input: input.clone() });
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(msg) => {
                stats.panics += 1;
                on_finding(Finding { kind: "panic", detail: msg, input });
                continue;
            }
        };
        match outcome {
            Outcome::Loaded(_) => stats.loaded += 1,
            Outcome::Refused(_) => stats.refused += 1,
        }
        if seen.insert(signature(&outcome)) && corpus.len() < MAX_CORPUS {
            if matches!(outcome, Outcome::Loaded(_)) {
                readable.push(corpus.len());
            }
            corpus.push(input);
        }
    }
    stats.answers = corpus.len();
    stats
}

/// A mutation of a corpus entry — a readable one half the time — inside the archive for
/// half of a zip target's.
fn next_input(t: &Target, corpus: &[Vec<u8>], readable: &[usize], rng: &mut StdRng) -> Vec<u8> {
    if corpus.is_empty() {
        return (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
    }
    let base = match readable.len() {
        0 => &corpus[rng.random_range(0..corpus.len())],
        n if rng.random() => &corpus[readable[rng.random_range(0..n)]],
        _ => &corpus[rng.random_range(0..corpus.len())],
    };
    if t.zip && rng.random() {
        if let Some(entries) = unzip(base) {
            return mutate_inside(&entries, rng);
        }
    }
    let other = &corpus[rng.random_range(0..corpus.len())];
    let mut input = base.clone();
    havoc(&mut input, other, rng);
    if let Some(fix) = t.fixup.filter(|_| rng.random_range(0..8) != 0) {
        fix(&mut input);
    }
    input
}
