//! Library half of the Hydra tools: the benchmark suites that `hydra-bench` runs,
//! kept here so that the binary stays a thin command line over them.

pub mod bench;
