//! The pure core of workload-identity-webhook: an admission request, the ServiceAccount and the
//! configuration in, a patch out. No I/O, no clock, no async runtime: this crate depends on none
//! of them, so a shell import here is a compile error. The webhook's server, `mutate`, `explain`,
//! the fuzz targets, the property tests and the benches all call [`admission::Review`] and
//! [`mutation`] the same way.
//!
//! Modules in layers, each importing only those above it:
//! - [`model`], [`echo`], [`patch`], [`validate`], [`locate`]: the data read from a request, the
//!   bounds on what is echoed back, JSON-patch building blocks, cloud-neutral value checks, and
//!   where a field is in a YAML document;
//! - [`providers`]: one module per cloud (its settings, mapping entry, formats, annotations and
//!   injection), behind one trait and one list;
//! - [`config`], [`mutation`], [`admission`]: the configuration, the mutation that asks every
//!   provider in the list, and the AdmissionReview envelope around it.

pub mod admission;
pub mod config;
pub mod echo;
pub mod locate;
pub mod model;
pub mod mutation;
pub mod patch;
pub mod policy;
pub mod providers;
pub mod validate;

#[cfg(test)]
mod tests;
