//! The relay's I/O: sockets, batched receive, and the per-core workers that drive
//! `turnd_proto::Server`.

pub mod batch;
pub mod socket;
pub mod worker;
