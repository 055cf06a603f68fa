//! Test helpers for the workspace's crates; a dev-dependency only.
//!
//! [`fuzz`] is a mutation fuzzer for the parsers of outside input (QMP
//! lines, runtime files, instance specs, hvparams, CPU masks, storage URIs,
//! QEMU help texts). It runs on the stable toolchain, without coverage
//! feedback: inputs are seeds (the project's fixtures) mutated byte-wise and
//! structurally (bit flips, random and "interesting" bytes and tokens,
//! deletions, duplications, splices of two inputs). A panic is a crash; an
//! input that takes longer than a second is a hang. Each finding is saved
//! under `target/fuzz-findings/` and fails the test.
//!
//! `KVMH_FUZZ_ITERATIONS` sets the executions per target (default 2,000, a
//! bounded run for the test suite); `KVMH_FUZZ_SEED` the random seed
//! (default fixed, so a test run is repeatable). `cargo xtask fuzz` runs
//! long, with a fresh seed, and reports the figures.
//!
//! ```
//! testkit::fuzz("doc-example", &[b"1,2".to_vec()], |input| {
//!     let text = String::from_utf8_lossy(input);
//!     let _ = text.split(',').map(str::parse::<u32>).collect::<Vec<_>>();
//! });
//! ```

#![deny(clippy::print_stdout)]
#![allow(clippy::print_stderr)] // the fuzzer reports its figures on stderr

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// An input slower than this is a hang.
const HANG: Duration = Duration::from_secs(1);

/// Tokens that tend to reach corner cases of JSON, TOML, keyval and URI
/// parsers.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"=",
    b"\\",
    b"\n",
    b"\r\n",
    b"\0",
    b"\xff",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"1e999",
    b"-9223372036854775809",
    b"null",
    b"true",
    b"false",
    b"\"\"",
    b"{}",
    b"[]",
    b"\\u0000",
    b"\\ud800",
    b"://",
    b"@",
    b"[::1]",
    b"%",
    b"..",
    b"/",
    b"0x",
    b"all",
    b"::",
    b"-",
    b"\xe2\x82\xac",
];

/// What a fuzz run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Inputs run.
    pub executions: u64,
    /// Inputs that panicked.
    pub crashes: u64,
    /// Inputs slower than a second.
    pub hangs: u64,
}

/// A small, fast PRNG (xorshift64*), enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `check` on `seeds` and on mutants of them, `KVMH_FUZZ_ITERATIONS`
/// in all, and panics (naming the saved findings) if any input panicked or
/// hung. Prints `fuzz NAME: N executions, C crashes, H hangs in S s`.
pub fn fuzz(name: &str, seeds: &[Vec<u8>], check: impl Fn(&[u8])) -> Report {
    let iterations = env_u64("KVMH_FUZZ_ITERATIONS", 2_000);
    let mut rng = Rng(env_u64("KVMH_FUZZ_SEED", 0x9e37_79b9_7f4a_7c15) | 1);
    let mut pool: Vec<Vec<u8>> = seeds.to_vec();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut report = Report {
        executions: 0,
        crashes: 0,
        hangs: 0,
    };
    let mut findings = Vec::new();
    let started = Instant::now();
    // Caught panics of this thread say nothing (findings are reported once,
    // at the end); other threads' panics still print as usual.
    quiet_panics_here(true);
    for i in 0..iterations {
        let input = if (i as usize) < pool.len() {
            pool[i as usize].clone()
        } else {
            mutate(&mut rng, &pool)
        };
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let took = t.elapsed();
        report.executions += 1;
        if outcome.is_err() {
            report.crashes += 1;
            findings.push(save(name, "crash", report.crashes, &input));
        } else if took > HANG {
            report.hangs += 1;
            findings.push(save(name, "hang", report.hangs, &input));
        } else if pool.len() < 4096 && rng.below(8) == 0 {
            // Keep some mutants to mutate further (a random walk).
            pool.push(input);
        }
    }
    quiet_panics_here(false);
    eprintln!(
        "fuzz {name}: {} executions, {} crashes, {} hangs in {:.1} s",
        report.executions,
        report.crashes,
        report.hangs,
        started.elapsed().as_secs_f64()
    );
    assert!(
        findings.is_empty(),
        "fuzz {name}: {} crashes and {} hangs; inputs saved as {findings:?}",
        report.crashes,
        report.hangs
    );
    report
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Silences panic messages of the calling thread while `on`; installs, once,
/// a hook that defers to the previous one for every other thread.
fn quiet_panics_here(on: bool) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(on));
}

fn mutate(rng: &mut Rng, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut data = pool[rng.below(pool.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = u8::try_from(rng.below(256)).unwrap_or(0);
            }
            2 => {
                let i = rng.below(len + 1);
                data.insert(i, u8::try_from(rng.below(256)).unwrap_or(0));
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(16)) + 1;
                data.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(32)) + 1;
                let piece = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, piece);
            }
            5 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
            6 if len > 0 => data.truncate(rng.below(len)),
            7 => {
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                // Replace a run of digits with a huge number.
                let at = rng.below(len + 1);
                data.splice(at..at, b"99999999999999999999999".iter().copied());
            }
        }
    }
    data
}

fn save(name: &str, kind: &str, n: u64, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-findings");
    let path = dir.join(format!("{name}-{kind}-{n}.bin"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, input);
    path
}

/// A structural mutant of the JSON `seed`, driven by `input` (so a byte
/// fuzzer explores JSON trees, not only broken syntax): each pair of bytes
/// picks a node and what replaces it — another type, an extreme number, an
/// odd string, an empty or nested container, a removed or unknown member.
pub fn json_mutant(seed: &serde_json::Value, input: &[u8]) -> serde_json::Value {
    use serde_json::{Value, json};
    let mut value = seed.clone();
    for pair in input.chunks(2) {
        let (pick, op) = (usize::from(pair[0]), pair.get(1).copied().unwrap_or(0));
        let mut paths = Vec::new();
        collect_paths(&value, &mut Vec::new(), &mut paths);
        let Some(path) = paths.get(pick % paths.len().max(1)).cloned() else {
            break;
        };
        let replacement = match op % 16 {
            0 => Value::Null,
            1 => json!(true),
            2 => json!(-1),
            3 => json!(u64::MAX),
            4 => json!(i64::MIN),
            5 => json!(1.5e300),
            6 => json!(""),
            7 => json!("x".repeat(300)),
            8 => json!("../../etc/passwd"),
            9 => json!("0:1::a,b=c"),
            10 => json!([]),
            11 => json!({}),
            12 => json!([1, "a", null]),
            13 => json!({"unknown": 1}),
            14 => json!(String::from_utf8_lossy(pair)),
            _ => {
                remove_at(&mut value, &path);
                continue;
            }
        };
        if let Some(slot) = node_at(&mut value, &path) {
            *slot = replacement;
        }
    }
    value
}

/// A step into a JSON tree: an object member or an array element.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn collect_paths(v: &serde_json::Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                here.push(Step::Key(k.clone()));
                collect_paths(child, here, out);
                here.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(Step::Index(i));
                collect_paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node_at<'a>(v: &'a mut serde_json::Value, path: &[Step]) -> Option<&'a mut serde_json::Value> {
    path.iter().try_fold(v, |node, step| match step {
        Step::Key(k) => node.get_mut(k.as_str()),
        Step::Index(i) => node.get_mut(*i),
    })
}

fn remove_at(v: &mut serde_json::Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (node_at(v, parent), last) {
        (Some(serde_json::Value::Object(m)), Step::Key(k)) => {
            m.remove(k);
        }
        (Some(serde_json::Value::Array(a)), Step::Index(i)) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

/// Every file under `dir` (relative to the workspace root) whose name ends
/// with one of `suffixes`, read as fuzz seeds.
pub fn seeds(dir: &str, suffixes: &[&str]) -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.to_string_lossy();
            suffixes.iter().any(|s| name.ends_with(s))
        })
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_parser_is_a_finding() {
        let caught = catch_unwind(|| {
            fuzz("testkit-self", &[b"ok".to_vec()], |input| {
                assert!(!input.contains(&b'!'), "bang");
            })
        });
        // Mutations insert arbitrary bytes: a `!` appears within the run.
        assert!(caught.is_err());
    }

    #[test]
    fn mutation_is_repeatable_for_a_seed() {
        let pool = vec![b"{\"a\": 1}".to_vec()];
        let (mut a, mut b) = (Rng(42), Rng(42));
        let xs: Vec<Vec<u8>> = (0..50).map(|_| mutate(&mut a, &pool)).collect();
        let ys: Vec<Vec<u8>> = (0..50).map(|_| mutate(&mut b, &pool)).collect();
        assert_eq!(xs, ys);
    }
}
