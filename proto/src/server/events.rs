//! What happened to allocations, as data: the core reports, the shell logs and bills.
//!
//! turnd-proto does no I/O and links no logging crate, so an operator's view of individual
//! sessions (who allocated, from where, how long, how much relayed, why it ended) leaves the
//! core as values. This file names why an allocation ends; the events themselves follow.

/// Why an allocation ended (the `reason` label of `turnd_allocations_ended_total`, and the
/// `reason` field of the allocation-ended event and the usage record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndReason {
    /// It ran out its lifetime without a refresh (RFC 8656 §7).
    Expired,
    /// The client deleted it: a Refresh with LIFETIME 0 (RFC 8656 §7.3).
    Deleted,
    /// Its TCP or TLS connection closed (RFC 8656 §3.1: the allocation ends with it).
    ConnectionClosed,
    /// A reload put its username or user id on the revocation list.
    Revoked,
    /// After a reload, no configured REST secret or static user verifies its credential.
    CredentialRemoved,
    /// The drain (SIGTERM) timed out with it still live.
    Drained,
    /// The process stopped (SIGINT, or a stop without a drain).
    Shutdown,
    /// An operator ended it (the admin API).
    Admin,
}

impl EndReason {
    /// Every reason, in [`EndReason::index`] order.
    pub const ALL: [EndReason; 8] = [
        EndReason::Expired,
        EndReason::Deleted,
        EndReason::ConnectionClosed,
        EndReason::Revoked,
        EndReason::CredentialRemoved,
        EndReason::Drained,
        EndReason::Shutdown,
        EndReason::Admin,
    ];

    /// The metric label and log field value (snake_case).
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::ConnectionClosed => "connection_closed",
            EndReason::Revoked => "revoked",
            EndReason::CredentialRemoved => "credential_removed",
            EndReason::Drained => "drained",
            EndReason::Shutdown => "shutdown",
            EndReason::Admin => "admin",
        }
    }

    /// The position in [`EndReason::ALL`] (and in `Stats::allocations_ended`).
    pub fn index(&self) -> usize {
        *self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_with_distinct_labels() {
        for (i, r) in EndReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = EndReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), EndReason::ALL.len());
    }
}
