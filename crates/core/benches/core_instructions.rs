//! Runs one core scenario N times, for valgrind's callgrind: stable instruction counts per
//! admission on a noisy machine. Only `measured` is counted when callgrind is started with
//! `--collect-atstart=no --toggle-collect=*core_instructions*measured*`, so set-up is left out.
//!
//!     cargo bench --no-run   # then find the binary: target/release/deps/core_instructions-*
//!     WIW_SCENARIO=pod-1-container WIW_ITERATIONS=1000 valgrind --tool=callgrind \
//!         --collect-atstart=no '--toggle-collect=*core_instructions*measured*' <binary>
//!
//! Scenarios: pod-1-container, pod-10-containers+2-init, service-account, pod-no-identity,
//! pod-50-containers, pod-1-container-3-clouds, lookup-<N> (mapping_for over N mappings),
//! admission-<N> (pod-1-container with N mappings), config-parse-<N>.
//! Without valgrind it prints the wall time per iteration.

/// mimalloc, as in the binaries, so the figures are those of production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../../benches/support/fixtures.rs"]
mod fixtures;

use std::hint::black_box;
use std::time::Instant;

use workload_identity_core::admission::Review;
use workload_identity_core::config::Config;
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::policy::Labels;

enum Work {
    Admit {
        body: Vec<u8>,
        config: Config,
    },
    Lookup {
        config: Config,
        keys: Vec<(String, String)>,
    },
    Parse {
        yaml: String,
    },
}

#[inline(never)]
fn measured(work: &Work, iterations: u64) -> usize {
    let service_account = ServiceAccount::default();
    let mut total = 0;
    for _ in 0..iterations {
        total += match work {
            Work::Admit { body, config } => {
                let review = Review::parse(black_box(body)).unwrap();
                let mutation = review.mutation(Some(&service_account), Labels::Unknown, config);
                review.response(&mutation).unwrap().len()
            }
            Work::Lookup { config, keys } => keys
                .iter()
                .filter(|(namespace, name)| config.mapping_for(black_box(namespace), black_box(name)).is_some())
                .count(),
            Work::Parse { yaml } => Config::parse(black_box(yaml), &Default::default())
                .unwrap()
                .identities
                .len(),
        };
    }
    total
}

fn main() {
    // `cargo bench` passes `--bench`; run a token iteration then so the suite stays quick.
    let under_cargo_bench = std::env::args().any(|arg| arg == "--bench");
    let scenario = std::env::var("WIW_SCENARIO").unwrap_or_else(|_| "pod-1-container".into());
    let iterations: u64 = std::env::var("WIW_ITERATIONS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(if under_cargo_bench { 1 } else { 1000 });
    let count = |prefix: &str| -> Option<usize> { scenario.strip_prefix(prefix)?.parse().ok() };
    let mapped = |count: usize| Config::parse(&fixtures::many_mappings_config(count), &Default::default()).unwrap();
    let work = if let Some(n) = count("lookup-") {
        let keys = fixtures::lookup_keys(n)
            .into_iter()
            .map(|(_, namespace, name, _)| (namespace, name))
            .collect();
        Work::Lookup {
            config: mapped(n),
            keys,
        }
    } else if let Some(n) = count("admission-") {
        Work::Admit {
            body: fixtures::scenario_named("pod-1-container").unwrap().body,
            config: mapped(n),
        }
    } else if let Some(n) = count("config-parse-") {
        Work::Parse {
            yaml: fixtures::many_mappings_config(n),
        }
    } else {
        let Some(found) = fixtures::scenario_named(&scenario) else {
            eprintln!("unknown WIW_SCENARIO {scenario:?}");
            std::process::exit(2);
        };
        Work::Admit {
            body: found.body,
            config: Config::parse(fixtures::SMALL_CONFIG, &Default::default()).unwrap(),
        }
    };
    let per_iteration = match &work {
        Work::Lookup { keys, .. } => keys.len() as u64,
        _ => 1,
    };
    let started = Instant::now();
    let total = black_box(measured(&work, iterations));
    let elapsed = started.elapsed();
    println!(
        "{scenario}: {iterations} iterations x {per_iteration} operations, {:.3} µs per operation (wall; checksum {total})",
        elapsed.as_secs_f64() * 1e6 / (iterations * per_iteration).max(1) as f64
    );
}
