//! `hydranode`: the Linux node agent.

fn main() {}
