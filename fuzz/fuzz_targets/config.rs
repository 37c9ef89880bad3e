//! `config.yaml` of the ConfigMap: parse, and use whatever parses on a Pod.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    workload_identity_core_fuzz::config(data);
});
