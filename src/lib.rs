//! # turnd: a self-hosted STUN/TURN relay for WebRTC applications
//!
//! The protocol lives in the sans-IO crate `turnd-proto`; this crate is the shell around it:
//! configuration ([`config`]), sockets and the per-core workers ([`relay`]), start-up and
//! shutdown ([`serve`]), configuration reload ([`reload`]), and the command line (`main.rs`, thin, over [`cli`]).

pub mod acme;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod events;
pub mod fast_path;
pub mod fdlimit;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod nat;
pub mod netif;
pub mod relay;
pub mod reload;
pub mod selftest;
pub mod serve;
pub mod sessions;
pub mod tls;
pub mod uris;
