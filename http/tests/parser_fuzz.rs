//! A bounded, deterministic fuzz run inside `cargo test`: the cargo-fuzz seed inputs
//! (api/fuzz/seeds) mutated with a fixed-seed generator and fed to the same checks as the
//! cargo-fuzz targets (api/fuzz/fuzz_targets). The coverage-guided run needs nightly
//! (`cargo +nightly fuzz run …`); this one runs everywhere, the same inputs every time.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::path::Path;
use wisp_api::{HostLimits, VmConfig, VmResources, VmState};
use wisp_http::routes::parse_request;

const ITERATIONS: usize = 20_000;
const METHODS: [&str; 6] = ["GET", "PUT", "PATCH", "POST", "DELETE", "get"];
const TOKENS: [&[u8]; 12] = [
    b"\"",
    b"{",
    b"}",
    b"[]",
    b"null",
    b"-1",
    b"4294967296",
    b"\\u0000",
    b"1e999",
    b"/",
    b"\"vcpu_count\":0",
    b"\"drive_id\":\"../x\"",
];

/// xorshift64*: a fixed sequence, so a failure reproduces on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../api/fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if at < input.len() => {
                let end = (at + rng.below(8) + 1).min(input.len());
                input.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 => {
                let other = &others[rng.below(others.len())];
                let from = rng.below(other.len());
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let end = (at + rng.below(16)).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
        }
    }
}

/// Same checks as fuzz_targets/request_parser.rs.
fn check_request(data: &[u8]) -> bool {
    let Some((&m, rest)) = data.split_first() else {
        return false;
    };
    let method = METHODS[usize::from(m) % METHODS.len()];
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return false;
    };
    let Ok(action) = parse_request(method, path, body) else {
        return false;
    };
    for state in [VmState::NotStarted, VmState::Running] {
        let _ = VmResources::new(HostLimits::default()).apply(&action, state);
    }
    true
}

/// Same checks as fuzz_targets/config_models.rs.
fn check_config(data: &[u8]) -> bool {
    let Ok(cfg) = serde_json::from_slice::<VmConfig>(data) else {
        return false;
    };
    let back: VmConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    let _ = VmResources::from_config(cfg, HostLimits::default());
    true
}

fn run(target: &str, check: fn(&[u8]) -> bool) -> usize {
    let seeds = seeds(target);
    for s in &seeds {
        assert!(
            check(s),
            "{target}: seed {:?} must be accepted",
            String::from_utf8_lossy(s)
        );
    }
    let mut rng = Rng(0x5eed_f00d_0b5e_55ed);
    let mut accepted = 0;
    for _ in 0..ITERATIONS {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        accepted += usize::from(check(&input));
    }
    accepted
}

#[test]
fn mutated_requests_never_panic_the_parser_or_the_store() {
    let accepted = run("request_parser", check_request);
    eprintln!("request_parser: {accepted} of {ITERATIONS} mutants accepted");
    // Some mutants must still be valid requests, or the run only exercised the error paths.
    assert!(accepted > 0);
}

#[test]
fn mutated_config_documents_round_trip_or_are_refused() {
    let accepted = run("config_models", check_config);
    assert!(accepted > 0);
}
