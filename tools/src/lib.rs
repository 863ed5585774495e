//! Library half of the Hydra tools: the benchmark suites that `hydra-bench` runs and
//! the simulated agents that `hydra-sim` and the exec benchmark share, kept here so
//! that the binaries stay thin command lines over them.

pub mod bench;
pub mod sim;
