//! The pure core: an admission request, the ServiceAccount and the configuration in, a patch out.
//! No I/O; the server, `mutate`, the fuzz targets, the property tests and the benches all call
//! [`admission::Review`] and [`mutation`] the same way.

pub mod admission;
pub mod config;
pub mod echo;
pub mod model;
pub mod mutation;
pub mod patch;
pub mod validate;

#[cfg(test)]
mod tests;
