//! The relay's I/O: sockets, batched receive, and the per-core workers that drive
//! `turnd_proto::Server`.

pub mod admin;
pub mod batch;
mod conns;
pub mod limits;
#[cfg(target_os = "linux")]
mod pktinfo;
pub mod socket;
pub mod stream;
mod timers;
mod token;
pub mod worker;
