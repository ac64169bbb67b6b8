//! What one allocation relayed: plain integers kept in the allocation itself, so counting a
//! packet touches no atomic, no lock and no allocator (issue 16). The shell reads them for the
//! allocation-ended event, the usage record and the admin API.

/// Packets and bytes relayed in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    /// Packets relayed.
    pub packets: u64,
    /// Application payload bytes relayed (the peer datagram's payload, without the TURN framing).
    pub bytes: u64,
}

impl Flow {
    /// Counts one relayed packet of `bytes` payload bytes.
    #[inline]
    pub fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

impl std::ops::AddAssign for Flow {
    fn add_assign(&mut self, other: Flow) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Both directions of one allocation's relayed traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// From the client, out of a relayed address to peers.
    pub to_peer: Flow,
    /// From peers, through a relayed address to the client.
    pub to_client: Flow,
}

impl std::ops::AddAssign for Usage {
    /// Adds another count of the same allocation's traffic (the kernel fast path's share).
    fn add_assign(&mut self, other: Usage) {
        self.to_peer += other.to_peer;
        self.to_client += other.to_client;
    }
}
