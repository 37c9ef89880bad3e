//! The pure core, per object: decode the AdmissionReview, mutate, build the JSON patch, encode the
//! response (`Review::parse`, `Review::mutation`, `Review::response`), how that grows with the
//! Pod's size, how mapping look-up grows with the number of mappings, and how long a ConfigMap
//! with many mappings takes to load. Prints a markdown table at the end.
//!
//!     cargo bench --bench core                 # everything
//!     cargo bench --bench core -- admission/   # a subset (criterion filter)

/// mimalloc, as in the binaries, so the figures are those of production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../../benches/support/fixtures.rs"]
mod fixtures;

use std::cell::RefCell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use serde_json::Value;
use workload_identity_core::admission::Review;
use workload_identity_core::config::Config;
use workload_identity_core::model::ServiceAccount;
use workload_identity_core::policy::Labels;

use fixtures::Scenario;

thread_local! {
    /// `(full id, what it is)` of every benchmark this run registered, in order, for the table.
    static RAN: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

fn note(group: &str, id: &str, what: impl Into<String>) {
    RAN.with(|ran| ran.borrow_mut().push((format!("{group}/{id}"), what.into())));
}

/// One admission as the server does it: the Pod's ServiceAccount is the one the standalone server
/// (and a cache miss-free cluster) hands over: existing, no identity annotations.
fn admit(body: &[u8], service_account: &ServiceAccount, config: &Config) -> Vec<u8> {
    let review = Review::parse(body).expect("valid review");
    let mutation = review.mutation(Some(service_account), Labels::Unknown, config);
    review.response(&mutation).expect("encodable")
}

fn check(scenario: &Scenario, config: &Config) {
    let response: Value = serde_json::from_slice(&admit(&scenario.body, &ServiceAccount::default(), config)).unwrap();
    assert_eq!(response["response"]["allowed"], true, "{}", scenario.name);
    assert_eq!(
        response["response"]["patch"].is_string(),
        scenario.patched,
        "{}: {response}",
        scenario.name
    );
}

fn small_config() -> Config {
    Config::parse(fixtures::SMALL_CONFIG, &Default::default()).unwrap()
}

fn admission(c: &mut Criterion) {
    let config = small_config();
    let service_account = ServiceAccount::default();
    let mut group = c.benchmark_group("admission");
    for scenario in fixtures::scenarios().into_iter().chain(fixtures::core_only_scenarios()) {
        check(&scenario, &config);
        note(
            "admission",
            scenario.name,
            format!(
                "{} (request {} B): decode + mutate + patch + encode",
                scenario.name,
                scenario.body.len()
            ),
        );
        group.bench_function(scenario.name, |b| {
            b.iter(|| admit(black_box(&scenario.body), &service_account, &config))
        });
    }
    group.finish();

    // The stages of the typical admission, apart.
    let scenario = fixtures::scenario_named("pod-1-container").unwrap();
    let mut group = c.benchmark_group("stages");
    note("stages", "decode", "pod-1-container: Review::parse only");
    group.bench_function("decode", |b| {
        b.iter(|| Review::parse(black_box(&scenario.body)).unwrap())
    });
    let review = Review::parse(&scenario.body).unwrap();
    note(
        "stages",
        "mutate",
        "pod-1-container: Review::mutation only (mutate + patch)",
    );
    group.bench_function("mutate", |b| {
        b.iter(|| review.mutation(Some(black_box(&service_account)), Labels::Unknown, &config))
    });
    let mutation = review.mutation(Some(&service_account), Labels::Unknown, &config);
    note("stages", "encode", "pod-1-container: Review::response only (encode)");
    group.bench_function("encode", |b| b.iter(|| review.response(black_box(&mutation)).unwrap()));
    note("stages", "drop", "pod-1-container: dropping the parsed review");
    group.bench_function("drop", |b| {
        b.iter_batched(|| Review::parse(&scenario.body).unwrap(), drop, BatchSize::SmallInput)
    });
    group.finish();
}

fn mappings(c: &mut Criterion) {
    let scenario = fixtures::scenario_named("pod-1-container").unwrap();
    let service_account = ServiceAccount::default();
    for count in [10usize, 1_000, 100_000] {
        let config = Config::parse(&fixtures::many_mappings_config(count), &Default::default()).unwrap();
        assert_eq!(config.identities.len(), count);
        let group_name = format!("lookup-{count}");
        let mut group = c.benchmark_group(&group_name);
        for (label, namespace, name, hit) in fixtures::lookup_keys(count) {
            assert_eq!(config.mapping_for(&namespace, &name).is_some(), hit, "{count} {label}");
            note(
                &group_name,
                label,
                format!("mapping_for, {count} mappings, {label} ({namespace}/{name})"),
            );
            group.bench_function(label, |b| {
                b.iter(|| config.mapping_for(black_box(&namespace), black_box(&name)).is_some())
            });
        }
        check(&scenario, &config);
        note(
            &group_name,
            "admission",
            format!("pod-1-container admission with {count} mappings"),
        );
        group.bench_function("admission", |b| {
            b.iter(|| admit(black_box(&scenario.body), &service_account, &config))
        });
        group.finish();
    }
}

fn reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("config-parse");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    for count in [10usize, 1_000, 100_000] {
        let yaml = fixtures::many_mappings_config(count);
        if count == 100_000 {
            group.measurement_time(Duration::from_secs(20));
        }
        note(
            "config-parse",
            &count.to_string(),
            format!(
                "Config::parse (ConfigMap reload), {count} mappings ({:.1} MiB of YAML)",
                yaml.len() as f64 / 1048576.0
            ),
        );
        group.bench_function(count.to_string(), |b| {
            b.iter(|| Config::parse(black_box(&yaml), &Default::default()).unwrap())
        });
    }
    // A hostile ConfigMap: the YAML parser's time grows with the square of the nesting depth.
    let deep = format!("identities: {}{}", "[".repeat(20_000), "]".repeat(20_000));
    note(
        "config-parse",
        "nested-20000",
        "Config::parse of 20,000 nested flow sequences (40 KB), refused",
    );
    group.bench_function("nested-20000", |b| {
        b.iter(|| assert!(Config::parse(black_box(&deep), &Default::default()).is_err()))
    });
    group.finish();
}

fn output_directory() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// The median of each benchmark measured since `since`, from criterion's `new/` estimates
/// (criterion leaves the figures of older runs in place).
fn medians(directory: &Path, since: std::time::SystemTime) -> Vec<(String, f64)> {
    let mut found = Vec::new();
    let mut stack = vec![directory.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|name| name == "benchmark.json")
                && dir.file_name().is_some_and(|name| name == "new")
            {
                let read = |path: PathBuf| -> Option<Value> { serde_json::from_slice(&std::fs::read(path).ok()?).ok() };
                let fresh = std::fs::metadata(dir.join("estimates.json"))
                    .and_then(|meta| meta.modified())
                    .is_ok_and(|modified| modified >= since);
                if !fresh {
                    continue;
                }
                let (Some(benchmark), Some(estimates)) = (read(path.clone()), read(dir.join("estimates.json"))) else {
                    continue;
                };
                if let (Some(id), Some(median)) = (
                    benchmark["full_id"].as_str(),
                    estimates["median"]["point_estimate"].as_f64(),
                ) {
                    found.push((id.to_owned(), median));
                }
            }
        }
    }
    found
}

fn human(nanoseconds: f64) -> String {
    match nanoseconds {
        ns if ns < 1_000.0 => format!("{ns:.1} ns"),
        ns if ns < 1_000_000.0 => format!("{:.2} µs", ns / 1e3),
        ns if ns < 1_000_000_000.0 => format!("{:.1} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

fn main() {
    let directory = output_directory();
    let mut criterion = Criterion::default().output_directory(&directory).configure_from_args();
    let started = std::time::SystemTime::now();
    admission(&mut criterion);
    mappings(&mut criterion);
    reload(&mut criterion);
    criterion.final_summary();

    let fresh = medians(&directory, started);
    let ran = RAN.with(|ran| ran.borrow().clone());
    let rows: Vec<String> = ran
        .iter()
        .filter_map(|(id, what)| {
            let (_, median) = fresh.iter().find(|(found, _)| found == id)?;
            Some(format!("| `{id}` | {what} | {} |", human(*median)))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n### Core (criterion medians, wall time per operation)\n");
    println!("| benchmark | what | median |");
    println!("|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
