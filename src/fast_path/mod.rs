//! The kernel fast path for UDP ChannelData (issue 18): an XDP program ([`xdp`], feature
//! `xdp`) that relays ChannelData between clients and peers of channels turnd-proto has
//! declared usable, and passes everything else to turnd's sockets unchanged.

#[cfg(feature = "xdp")]
pub mod xdp;
