//! ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel number, length) and the
//! application data. Over UDP the padding to 4 bytes is optional; over TCP and TLS it is
//! required (§12.5).

/// The range of channel numbers RFC 8656 §12 allows.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// The top of RFC 5766's older, wider range, which some clients (coturn's) still use.
pub const LEGACY_CHANNEL_MAX: u16 = 0x7FFF;
/// Length of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// A channel number a ChannelData header may carry: 0x4000 through 0x7FFF (RFC 5766's range,
/// which contains RFC 8656's). Whether one may be bound is the server's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(u16);

impl ChannelNumber {
    /// The number, if it is in 0x4000..=0x7FFF.
    #[inline]
    pub fn new(n: u16) -> Option<ChannelNumber> {
        (CHANNEL_MIN..=LEGACY_CHANNEL_MAX)
            .contains(&n)
            .then_some(ChannelNumber(n))
    }

    /// The number on the wire.
    #[inline]
    pub fn get(self) -> u16 {
        self.0
    }

    /// RFC 8656 §12: 0x4000 through 0x4FFF. The rest of RFC 5766's range is accepted only with
    /// `legacy_channel_numbers`.
    pub fn is_rfc8656(self) -> bool {
        self.0 <= CHANNEL_MAX
    }
}

/// A parsed ChannelData message borrowing its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl ChannelData<'_> {
    /// The channel number, typed ([`parse`] accepted only numbers in its range).
    #[inline]
    pub fn number(&self) -> ChannelNumber {
        ChannelNumber(self.channel)
    }
}

/// Parses ChannelData. None when the channel number is outside 0x4000..=0x7FFF or the length field
/// claims more bytes than the packet carries (a known attack: such a header must not make the
/// server read past the packet). Trailing bytes (padding) are ignored.
#[inline]
pub fn parse(packet: &[u8]) -> Option<ChannelData<'_>> {
    let head = packet.get(..HEADER_LEN)?;
    let channel = u16::from_be_bytes([head[0], head[1]]);
    ChannelNumber::new(channel)?;
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let data = packet.get(HEADER_LEN..HEADER_LEN + len)?;
    Some(ChannelData { channel, data })
}

/// Writes a ChannelData header into the 4 bytes before `data_start`, so the payload that is
/// already in `buf` goes out without a copy.
#[inline]
pub fn write_header(buf: &mut [u8], data_start: usize, channel: u16, len: usize) {
    let h = &mut buf[data_start - HEADER_LEN..data_start];
    h[..2].copy_from_slice(&channel.to_be_bytes());
    h[2..].copy_from_slice(&(len as u16).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_beyond_the_packet_is_rejected() {
        assert_eq!(parse(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4]), None);
        assert_eq!(
            parse(&[0x40, 0x01, 0x00, 0x03, 1, 2, 3, 0]),
            Some(ChannelData {
                channel: 0x4001,
                data: &[1, 2, 3]
            })
        );
        assert_eq!(parse(&[0x80, 0x00, 0x00, 0x00]), None);
        assert_eq!(parse(&[0x40, 0x00, 0x00]), None);
    }

    #[test]
    fn channel_numbers_know_their_range() {
        assert_eq!(ChannelNumber::new(0x3FFF), None);
        assert_eq!(ChannelNumber::new(0x8000), None);
        assert!(ChannelNumber::new(0x4FFF).unwrap().is_rfc8656());
        let legacy = ChannelNumber::new(0x5000).unwrap();
        assert!(!legacy.is_rfc8656());
        assert_eq!(legacy.get(), 0x5000);
    }
}
