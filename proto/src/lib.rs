//! # turnd-proto: the sans-IO STUN/TURN server core
//!
//! This crate is turnd's protocol engine as a plain value. It has no sockets, no async
//! runtime, no clocks and no OS randomness: the shell passes packets, the current time
//! ([`server::Now`]) and a seed in, and carries out the [`server::Command`]s that come out.
//! That makes every RFC rule testable with injected time, deterministically.
//!
//! ## The drive contract
//!
//! 1. Call a `handle_*` method of [`server::Server`] for each input (a client datagram, a peer
//!    datagram, the result of a relay bind, a timeout).
//! 2. Relayed data comes back directly from `handle_client_datagram` /
//!    `handle_peer_datagram` as a range of the caller's buffer: send it at once.
//! 3. Then drain [`server::Server::poll_command`] to `None`, in order.
//! 4. Then re-arm the timer from [`server::Server::poll_timeout`].
//!
//! ## Modules
//!
//! * [`wire`]: the STUN codec, ChannelData, first-byte demux and stream framing.
//! * [`auth`]: TURN REST credentials (mint and verify), long-term keys, stateless nonces.
//! * [`policy`]: which peer addresses may be relayed to.
//! * [`source_key`]: who counts as one client in a per-address limit (IPv6 by prefix).
//! * [`server`]: allocations, permissions, channels, quotas, ports and the request handlers.
//! * [`stats`]: counters the shell exports as metrics.

pub mod auth;
pub mod client;
pub mod policy;
pub mod server;
pub mod source_key;
pub mod stats;
pub mod wire;

pub use server::{
    ClientId, Command, FromClient, GaugeRecount, Now, RelayAddress, RelayId, Server, ServerConfig,
    ToClient, Transport,
};
