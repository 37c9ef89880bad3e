//! Raw request bodies of `/mutate`: parse, mutate with every cloud mapped, encode the answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    workload_identity_core_fuzz::review(data);
});
