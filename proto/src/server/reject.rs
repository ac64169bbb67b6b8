//! One table for every way a request can be refused: error code, reason phrase, metric label.
//! Reason phrases are short on purpose: unauthenticated error responses must stay small so
//! the server cannot be used to amplify traffic (REFERENCES.md, "401 used for reflection").

/// A refusal, answered as a STUN error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// 400 Bad Request.
    BadRequest,
    /// 400 for a channel number outside the configured range, with a reason that says so:
    /// RFC 5766 clients use 0x5000-0x7FFF, which RFC 8656 no longer allows.
    ChannelNumberOutOfRange,
    /// 401 Unauthorized: the challenge, or a request without MESSAGE-INTEGRITY.
    Unauthorized,
    /// 403 Forbidden: a peer address the policy refuses.
    Forbidden,
    /// 420 Unknown Attribute: a comprehension-required attribute the server does not know.
    UnknownAttribute,
    /// 437 Allocation Mismatch.
    AllocationMismatch,
    /// 438 Stale Nonce.
    StaleNonce,
    /// 440 Address Family not Supported.
    AddressFamilyNotSupported,
    /// 441 Wrong Credentials: not the allocation's username.
    WrongCredentials,
    /// 442 Unsupported Transport Protocol.
    UnsupportedTransportProtocol,
    /// 443 Peer Address Family Mismatch.
    PeerAddressFamilyMismatch,
    /// 486 Allocation Quota Reached.
    AllocationQuotaReached,
    /// 508 Insufficient Capacity.
    InsufficientCapacity,
}

impl Reject {
    /// Every reject, in metric-index order.
    pub const ALL: [Reject; 13] = [
        Reject::BadRequest,
        Reject::ChannelNumberOutOfRange,
        Reject::Unauthorized,
        Reject::Forbidden,
        Reject::UnknownAttribute,
        Reject::AllocationMismatch,
        Reject::StaleNonce,
        Reject::AddressFamilyNotSupported,
        Reject::WrongCredentials,
        Reject::UnsupportedTransportProtocol,
        Reject::PeerAddressFamilyMismatch,
        Reject::AllocationQuotaReached,
        Reject::InsufficientCapacity,
    ];

    /// The STUN error code (RFC 8489 §14.8, RFC 8656 §19).
    pub fn code(self) -> u16 {
        match self {
            Reject::BadRequest | Reject::ChannelNumberOutOfRange => 400,
            Reject::Unauthorized => 401,
            Reject::Forbidden => 403,
            Reject::UnknownAttribute => 420,
            Reject::AllocationMismatch => 437,
            Reject::StaleNonce => 438,
            Reject::AddressFamilyNotSupported => 440,
            Reject::WrongCredentials => 441,
            Reject::UnsupportedTransportProtocol => 442,
            Reject::PeerAddressFamilyMismatch => 443,
            Reject::AllocationQuotaReached => 486,
            Reject::InsufficientCapacity => 508,
        }
    }

    /// The reason phrase sent on the wire.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::BadRequest => "Bad Request",
            Reject::ChannelNumberOutOfRange => {
                "Bad Request: channel number outside 0x4000-0x4FFF (RFC 8656)"
            }
            Reject::Unauthorized => "Unauthorized",
            Reject::Forbidden => "Forbidden",
            Reject::UnknownAttribute => "Unknown Attribute",
            Reject::AllocationMismatch => "Allocation Mismatch",
            Reject::StaleNonce => "Stale Nonce",
            Reject::AddressFamilyNotSupported => "Address Family not Supported",
            Reject::WrongCredentials => "Wrong Credentials",
            Reject::UnsupportedTransportProtocol => "Unsupported Transport Protocol",
            Reject::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            Reject::AllocationQuotaReached => "Allocation Quota Reached",
            Reject::InsufficientCapacity => "Insufficient Capacity",
        }
    }

    /// Position in [`Reject::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}
