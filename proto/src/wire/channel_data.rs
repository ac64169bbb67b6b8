//! ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel number, length) and the
//! application data. Over UDP the padding to 4 bytes is optional; over TCP and TLS it is
//! required (§12.5).

/// The range of channel numbers RFC 8656 §12 allows.
pub const CHANNEL_MIN: u16 = 0x4000;
/// The highest channel number RFC 8656 §12 allows.
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// The top of RFC 5766's older, wider range, which some clients (coturn's) still use.
pub const LEGACY_CHANNEL_MAX: u16 = 0x7FFF;
/// Length of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// A parsed ChannelData message borrowing its packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number.
    pub channel: u16,
    /// The application data (without padding).
    pub data: &'a [u8],
}

/// Parses ChannelData. None when the channel number is outside 0x4000..=0x7FFF or the length field
/// claims more bytes than the packet carries (a known attack: such a header must not make the
/// server read past the packet). Trailing bytes (padding) are ignored.
#[inline]
pub fn parse(packet: &[u8]) -> Option<ChannelData<'_>> {
    let head = packet.get(..HEADER_LEN)?;
    let channel = u16::from_be_bytes([head[0], head[1]]);
    if !(CHANNEL_MIN..=LEGACY_CHANNEL_MAX).contains(&channel) {
        return None;
    }
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
}
