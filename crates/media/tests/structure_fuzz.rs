//! The fuzz harness (stable toolchain, no extra tools): structure-aware
//! mutants of real files for three targets, the MP4/fMP4 indexer, the
//! Annex-B splitter and the HEVC header parsers behind it, each checked by
//! one oracle: no panic, an answer within the time budget, no allocation
//! beyond what the file's size can justify; a file that indexes is then
//! decoded a little, so mutated parameter sets reach the decoder too.
//!
//! The test suite runs a short, fixed-seed pass and replays every case in
//! `tests/fuzz-regressions/`; `scripts/fuzz` runs for minutes with fresh
//! seeds. A failing case is written there as its seed file and edits (and
//! the whole mutant under `target/fuzz-failures/`) so it stays a regression
//! test. A case that kills the process (an allocation the system refuses
//! aborts; it cannot be caught) is noted before it runs, as its seed and
//! number, and the next run regenerates and records it.

mod support;

use bytes::Bytes;
use media::{Budget, MemorySource, Player, Span, Threading};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::mutate::{self, Edit};

#[global_allocator]
static ALLOCATOR: support::CountingAllocator = support::CountingAllocator;

/// Indexing may take this long per case (the budget the oracle enforces).
const TIME_BUDGET: Duration = Duration::from_secs(3);
const MAX_SAMPLES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Target {
    Mp4,
    AnnexB,
}

/// A case written down: which seed file, which edits.
#[derive(Debug, Serialize, Deserialize)]
struct Case {
    target: Target,
    seed_file: String,
    edits: Vec<Edit>,
    failure: String,
}

struct Seed {
    name: String,
    target: Target,
    bytes: Vec<u8>,
}

/// The corpus: every fixture shape (generated ones and the third-party encodes).
fn seeds() -> Vec<Seed> {
    testkit::fixtures::all()
        .unwrap()
        .into_iter()
        .map(|fixture| {
            let target = if fixture.name.ends_with(".h265") || fixture.name.ends_with(".265") {
                Target::AnnexB
            } else {
                Target::Mp4
            };
            Seed { bytes: std::fs::read(&fixture.path).unwrap(), name: fixture.name, target }
        })
        .collect()
}

/// Runs one mutant through the target and the oracle; `Err` says what broke.
fn check(bytes: Vec<u8>) -> Result<(), String> {
    let length = bytes.len();
    let started = Instant::now();
    let (outcome, peak) = support::peak_allocation(|| {
        std::panic::catch_unwind(|| {
            let source = MemorySource(bytes);
            let index = media::probe::index(&source, &Budget::new(TIME_BUDGET, MAX_SAMPLES));
            if let Ok(index) = &index {
                decode_a_little(index, &source.0);
            }
            index.map(|index| index.samples.len())
        })
    });
    let elapsed = started.elapsed();
    let _indexed = outcome.map_err(|panic| {
        let text = panic.downcast_ref::<String>().cloned().or(panic.downcast_ref::<&str>().map(|s| s.to_string()));
        format!("panicked: {}", text.unwrap_or_default())
    })?;
    if elapsed > TIME_BUDGET + Duration::from_secs(2) {
        return Err(format!("took {elapsed:?}"));
    }
    // A sample costs ~100 bytes of index, and every sample needs a byte of the object.
    let allowed = 128 * length + (64 << 20);
    if peak > allowed {
        return Err(format!("allocated {} MiB for a {} KiB file", peak >> 20, length >> 10));
    }
    Ok(())
}

/// Decodes the first and the last frame when that is cheap, so mutated
/// parameter sets and sample sizes reach the player and libavcodec.
fn decode_a_little(index: &media::VideoIndex, bytes: &[u8]) {
    if u64::from(index.width) * u64::from(index.height) > 1920 * 1088 {
        return;
    }
    let Ok(mut player) = Player::new(index, Threading::Single, 16 << 20) else { return };
    for frame in [0, index.frame_count() as u32 - 1] {
        let Some((position, _)) = index.frame(frame) else { continue };
        let range = Player::required_bytes(index, position);
        if range.end - range.start > 2 << 20 {
            continue;
        }
        let span = Span::new(range.start, Bytes::copy_from_slice(&bytes[range.start as usize..range.end as usize]));
        let _ = player.picture(index, position, &span, &|| false);
    }
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions")
}

/// Keeps a failing case as a regression test and the mutant for a debugger.
fn record(seed: &Seed, edits: Vec<Edit>, mutant: &[u8], failure: &str) -> PathBuf {
    let case = Case { target: seed.target, seed_file: seed.name.clone(), edits, failure: failure.to_string() };
    let text = serde_json::to_string_pretty(&case).unwrap();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let path = regressions_dir().join(format!("{}-{hash:016x}.json", seed.name));
    std::fs::write(&path, text).unwrap();
    let failures = testkit::workspace_root().join("target/fuzz-failures");
    std::fs::create_dir_all(&failures).unwrap();
    std::fs::write(failures.join(format!("{}-{hash:016x}.bin", seed.name)), mutant).unwrap();
    path
}

/// Where the case being run is noted (`seed number`), so a case that
/// aborts the process is not lost.
fn in_progress_path() -> PathBuf {
    testkit::workspace_root().join("target/fuzz-failures/in-progress")
}

/// The edits of mutant number `number` of a run with `seed_number`.
fn regenerate(seeds: &[Seed], seed_number: u64, number: u64) -> (usize, Vec<Edit>) {
    let mut rng = StdRng::seed_from_u64(seed_number);
    let mut ran = 0;
    loop {
        for (which, seed) in seeds.iter().enumerate() {
            let edits = mutate(seed, &mut rng);
            if ran == number {
                return (which, edits);
            }
            ran += 1;
        }
    }
}

fn mutate(seed: &Seed, rng: &mut StdRng) -> Vec<Edit> {
    match seed.target {
        Target::Mp4 => mutate::mutate_mp4(&seed.bytes, rng),
        Target::AnnexB => mutate::mutate_annexb(&seed.bytes, rng),
    }
}

/// Records the case a previous run was running when the process died.
fn recover_aborted_case(seeds: &[Seed]) -> Option<String> {
    let noted = std::fs::read_to_string(in_progress_path()).ok()?;
    let _ = std::fs::remove_file(in_progress_path());
    let (seed_number, number) = noted.trim().split_once(' ')?;
    let (seed_number, number) = (seed_number.parse().ok()?, number.parse().ok()?);
    let (which, edits) = regenerate(seeds, seed_number, number);
    let mut mutant = seeds[which].bytes.clone();
    mutate::apply(&mut mutant, &edits);
    let failure = "killed the process (an allocation the system refused, or a crash)";
    let path = record(&seeds[which], edits, &mutant, failure);
    Some(format!("{}: {failure} (kept as {})", seeds[which].name, path.display()))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn structure_aware_mutants_never_crash_stall_or_balloon() {
    let seed_number = env_number("FUZZ_SEED", 1);
    let iterations = env_number("FUZZ_ITERATIONS", 40);
    let deadline = Instant::now() + Duration::from_secs(env_number("FUZZ_SECONDS", 600));
    let seeds = seeds();
    let mut failures: Vec<String> = recover_aborted_case(&seeds).into_iter().collect();
    std::fs::create_dir_all(in_progress_path().parent().unwrap()).unwrap();
    let mut rng = StdRng::seed_from_u64(seed_number);
    let mut ran = 0u64;
    // Each round mutates every seed once; stop at the iteration count or the time.
    'rounds: while ran < iterations * seeds.len() as u64 {
        for seed in &seeds {
            if Instant::now() > deadline {
                break 'rounds;
            }
            let edits = mutate(seed, &mut rng);
            let mut mutant = seed.bytes.clone();
            mutate::apply(&mut mutant, &edits);
            std::fs::write(in_progress_path(), format!("{seed_number} {ran}")).unwrap();
            if let Err(failure) = check(mutant.clone()) {
                let path = record(seed, edits, &mutant, &failure);
                failures.push(format!("{}: {failure} (kept as {})", seed.name, path.display()));
            }
            ran += 1;
        }
    }
    let _ = std::fs::remove_file(in_progress_path());
    eprintln!("fuzz: seed {seed_number}, {ran} mutants of {} files", seeds.len());
    assert!(failures.is_empty(), "{} failing mutants:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn recorded_failures_stay_fixed() {
    let seeds = seeds();
    let mut replayed = 0;
    for entry in std::fs::read_dir(regressions_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let case: Case = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let Some(seed) = seeds.iter().find(|s| s.name == case.seed_file) else {
            panic!("{}: its seed file {} is not among the fixtures", path.display(), case.seed_file);
        };
        let mut mutant = seed.bytes.clone();
        mutate::apply(&mut mutant, &case.edits);
        check(mutant).unwrap_or_else(|failure| panic!("{} fails again: {failure}", path.display()));
        replayed += 1;
    }
    eprintln!("replayed {replayed} recorded cases");
}
