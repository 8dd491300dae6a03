//! First-byte demultiplexing of a datagram arriving on a media port.
//!
//! STUN, DTLS, RTP and RTCP share one UDP port (RFC 7983, RFC 5761). This
//! module owns the decision of which protocol a datagram claims to be, before
//! anything parses it. It only looks at fixed header bytes and minimum
//! lengths; whether the rest is well-formed is for the protocol's own parser.

/// The protocol a datagram claims to be by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    /// A STUN message (ICE connectivity checks).
    Stun,
    /// A DTLS record (the handshake that keys SRTP, and data channels).
    Dtls,
    /// An RTP packet (media).
    Rtp,
    /// An RTCP compound packet (feedback and reports).
    Rtcp,
    /// Anything else, including ZRTP and TURN channel data, which a WebRTC
    /// media port never expects, and packets too short for their class.
    Unknown,
}

/// The fixed STUN magic cookie, which tells STUN apart from the (unused)
/// RFC 3489 classic STUN and from garbage that happens to start with 0..=3.
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER_LEN: usize = 20;
/// A DTLS record header: type, version, epoch, sequence number, length.
const DTLS_RECORD_HEADER_LEN: usize = 13;
const RTP_HEADER_LEN: usize = 12;
/// An RTCP header plus the sender SSRC every RTCP packet type carries.
const RTCP_MIN_LEN: usize = 8;

/// Classify a datagram by RFC 7983 first-byte ranges.
///
/// RTP and RTCP are told apart by the second byte (RFC 5761 section 4):
/// RTCP packet types 192..=223 are exactly the values an RTP payload type
/// byte (marker bit included) is forbidden to take on a muxed port.
pub fn classify(datagram: &[u8]) -> PacketClass {
    let Some(&first) = datagram.first() else {
        return PacketClass::Unknown;
    };

    match first {
        0..=3 => {
            let cookie = datagram.get(4..8);
            if datagram.len() >= STUN_HEADER_LEN && cookie == Some(&STUN_MAGIC_COOKIE[..]) {
                PacketClass::Stun
            } else {
                PacketClass::Unknown
            }
        }
        20..=63 if datagram.len() >= DTLS_RECORD_HEADER_LEN => PacketClass::Dtls,
        // The top two bits are the RTP/RTCP version, which must be 2.
        128..=191 => {
            let Some(&second) = datagram.get(1) else {
                return PacketClass::Unknown;
            };
            if (192..=223).contains(&second) {
                if datagram.len() >= RTCP_MIN_LEN {
                    PacketClass::Rtcp
                } else {
                    PacketClass::Unknown
                }
            } else if datagram.len() >= RTP_HEADER_LEN {
                PacketClass::Rtp
            } else {
                PacketClass::Unknown
            }
        }
        _ => PacketClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift;

    fn stun(len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        d[..2].copy_from_slice(&[0x00, 0x01]);
        if len >= 8 {
            d[4..8].copy_from_slice(&STUN_MAGIC_COOKIE);
        }
        d
    }

    fn with_first_two(first: u8, second: u8, len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        if len > 0 {
            d[0] = first;
        }
        if len > 1 {
            d[1] = second;
        }
        d
    }

    #[test]
    fn empty_is_unknown() {
        assert_eq!(classify(&[]), PacketClass::Unknown);
    }

    #[test]
    fn stun_needs_header_and_cookie() {
        assert_eq!(classify(&stun(20)), PacketClass::Stun);
        assert_eq!(classify(&stun(100)), PacketClass::Stun);
        assert_eq!(classify(&stun(19)), PacketClass::Unknown);
        assert_eq!(classify(&stun(7)), PacketClass::Unknown);

        for first in 0..=3u8 {
            let mut d = stun(20);
            d[0] = first;
            assert_eq!(classify(&d), PacketClass::Stun, "first byte {first}");
        }

        let mut wrong_cookie = stun(20);
        wrong_cookie[7] ^= 1;
        assert_eq!(classify(&wrong_cookie), PacketClass::Unknown);

        let mut not_stun_range = stun(20);
        not_stun_range[0] = 4;
        assert_eq!(classify(&not_stun_range), PacketClass::Unknown);
    }

    #[test]
    fn dtls_range_and_length() {
        for first in 20..=63u8 {
            assert_eq!(
                classify(&with_first_two(first, 0xfe, 13)),
                PacketClass::Dtls
            );
            assert_eq!(
                classify(&with_first_two(first, 0xfe, 12)),
                PacketClass::Unknown
            );
        }
        // A real handshake record header: content type 22, DTLS 1.2.
        assert_eq!(
            classify(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            PacketClass::Dtls
        );
    }

    #[test]
    fn rtp_and_rtcp_by_second_byte() {
        // Version 2, no padding/extension/CSRC; PT 96 and 111 with and
        // without the marker bit.
        for second in [96u8, 111, 96 | 0x80, 111 | 0x80, 0, 127, 128, 191, 224, 255] {
            assert_eq!(
                classify(&with_first_two(0x80, second, 12)),
                PacketClass::Rtp,
                "second byte {second}"
            );
            assert_eq!(
                classify(&with_first_two(0x80, second, 11)),
                PacketClass::Unknown,
                "second byte {second}"
            );
        }
        // SR 200, RR 201, SDES 202, BYE 203, RTPFB 205, PSFB 206, XR 207.
        for second in 192..=223u8 {
            assert_eq!(
                classify(&with_first_two(0x81, second, 8)),
                PacketClass::Rtcp,
                "second byte {second}"
            );
            assert_eq!(
                classify(&with_first_two(0x81, second, 7)),
                PacketClass::Unknown,
                "second byte {second}"
            );
        }
        // The whole version-2 range counts, whatever the P/X/CC bits.
        assert_eq!(classify(&with_first_two(0xbf, 96, 12)), PacketClass::Rtp);
        assert_eq!(classify(&with_first_two(0xbf, 200, 8)), PacketClass::Rtcp);
        assert_eq!(classify(&[0x80]), PacketClass::Unknown);
    }

    #[test]
    fn other_ranges_are_unknown() {
        // ZRTP 16..=19, TURN channels 64..=79, version 0/1/3 RTP, the gaps.
        for first in (4..=19u8).chain(64..=127).chain(192..=255) {
            assert_eq!(
                classify(&with_first_two(first, 200, 1500)),
                PacketClass::Unknown,
                "first byte {first}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift::new(0x7983);
        let mut counts = [0usize; 5];
        rng.for_each_input(100_000, 1500, |d| {
            let i = match classify(d) {
                PacketClass::Stun => 0,
                PacketClass::Dtls => 1,
                PacketClass::Rtp => 2,
                PacketClass::Rtcp => 3,
                PacketClass::Unknown => 4,
            };
            counts[i] += 1;
        });
        // Random first bytes land in DTLS, RTP and RTCP ranges often enough
        // that the test is not just exercising the Unknown arm.
        assert!(counts[1] > 0 && counts[2] > 0 && counts[3] > 0);
    }
}
