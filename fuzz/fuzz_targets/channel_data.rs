//! ChannelData parsing on arbitrary bytes: the payload is exactly what the header claims and
//! always inside the packet (the "length beyond the packet" attack).
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnd_proto::wire::channel_data::{self, CHANNEL_MIN, HEADER_LEN, LEGACY_CHANNEL_MAX};

fuzz_target!(|data: &[u8]| {
    if let Some(cd) = channel_data::parse(data) {
        let claimed = u16::from_be_bytes([data[2], data[3]]) as usize;
        assert_eq!(cd.data.len(), claimed);
        assert!(HEADER_LEN + claimed <= data.len());
        assert!((CHANNEL_MIN..=LEGACY_CHANNEL_MAX).contains(&cd.channel));
        assert_eq!(cd.data, &data[HEADER_LEN..HEADER_LEN + claimed]);
    }
});
