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
//! The client side ([`client::Transaction`]) is driven the same way: bytes and the time in,
//! bytes to send and a deadline out.
//!
//! ## Example: one Allocate, both sides driven by hand
//!
//! A shell does this with sockets and a clock; here the client's bytes go straight to the
//! server and its answers straight back.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use turnd_proto::auth::{mint_rest_credential, Credentials};
//! use turnd_proto::client::{self, Attr, ClientAuth, Timing, Transaction, TransactionIds};
//! use turnd_proto::server::ledger::Ledger;
//! use turnd_proto::wire::{attr, Message, Method};
//! use turnd_proto::{ClientId, Command, FromClient, Now, RelayAddress, Server, ServerConfig, Transport};
//!
//! let secret = b"shared secret".to_vec();
//! let credentials = Credentials::new(vec![secret.clone()], Default::default(), 86_400);
//! let relay = RelayAddress { bind: "127.0.0.1".parse()?, advertised: "127.0.0.1".parse()? };
//! // The nonce key and the seed have no default: a shell draws them from the OS.
//! let (nonce_key, seed) = ([42; 32], 7);
//! let config = ServerConfig::new("example.org", credentials, Some(relay), nonce_key, seed);
//! // The ledger holds what workers share: per-user quota 10, no global cap.
//! let mut server = Server::new(config, Arc::new(Ledger::new(10, 0)));
//!
//! let now = Now { mono: Instant::now(), unix: 1_800_000_000 };
//! let from = ClientId {
//!     transport: Transport::Udp,
//!     local: 0,
//!     remote: "192.0.2.1:50000".parse()?,
//!     local_ip: "198.51.100.1".parse()?, // the server address the client sent to
//! };
//! let cred = mint_rest_credential(&secret, "alice", now.unix, 3600);
//! let mut auth = ClientAuth::new(&cred.username, &cred.password);
//! let mut ids = TransactionIds::new(1); // a shell seeds this from the OS too
//! let attrs = [Attr::RequestedTransport(17)];
//! let mut allocate = Transaction::new(
//!     Method::ALLOCATE, &attrs, Some(&auth), false, Timing::unreliable(), &mut ids, now.mono,
//! );
//!
//! let response = loop {
//!     if let Some(outcome) = allocate.poll_outcome() {
//!         break outcome.expect("answered at once");
//!     }
//!     // The client's next request (the first draws a 401 that teaches realm and nonce).
//!     let request = allocate.poll_transmit(now.mono).expect("a request is due").to_vec();
//!     // 1. The input; a request is answered through commands, never relayed.
//!     assert_eq!(server.handle_client_datagram(now, from, &request), FromClient::Done);
//!     // 3. Drain the commands, in order.
//!     while let Some(command) = server.poll_command() {
//!         match command {
//!             Command::SendToClient { bytes, .. } => {
//!                 allocate.handle_input(&bytes, now.mono, &mut auth, &mut ids);
//!             }
//!             // A shell binds a UDP socket at `addr` here.
//!             Command::BindRelay { relay, .. } => server.handle_relay_bound(relay, Ok(()), now),
//!             Command::ReleaseRelay { .. } => {}
//!             // Only with `ServerConfig::fast_path`: a kernel program's routes.
//!             Command::InstallRoute(_) | Command::RemoveRoute(_) => {}
//!         }
//!     }
//!     // 4. Re-arm the timer (allocation, permission and channel lifetimes).
//!     let _wake_at = server.poll_timeout();
//! };
//! let relayed = client::address(&Message::parse(&response)?, attr::XOR_RELAYED_ADDRESS);
//! assert_eq!(relayed.map(|a| a.ip()), Some("127.0.0.1".parse()?));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Modules
//!
//! * [`client`]: the client side: request builders and the sans-IO [`client::Transaction`].
//! * [`wire`]: the STUN codec, ChannelData, first-byte demux and stream framing.
//! * [`auth`]: TURN REST credentials (mint and verify), long-term keys, stateless nonces.
//! * [`policy`]: which peer addresses may be relayed to.
//! * [`source_key`]: who counts as one client in a per-address limit (IPv6 by prefix).
//! * [`server`]: allocations, permissions, channels, quotas, ports and the request handlers.
//! * [`stats`]: counters the shell exports as metrics.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod policy;
pub mod server;
pub mod source_key;
pub mod stats;
pub mod wire;

pub use server::{
    ChannelRoute, ClientId, Command, EndReason, FromClient, GaugeRecount, Now, RelayAddress,
    RelayId, Server, ServerConfig, ToClient, Transport,
};
