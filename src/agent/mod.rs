//! `hydranode`: the Linux node agent (enrollment, heartbeats, exec).
