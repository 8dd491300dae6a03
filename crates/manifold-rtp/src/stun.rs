//! Reading the ICE ufrags out of a STUN Binding request, so a datagram from a
//! new address can be routed to the participant whose local ufrag it names.
//!
//! This is routing, not authentication: MESSAGE-INTEGRITY and FINGERPRINT are
//! checked later by the participant's own ICE agent, which knows the
//! password. What this module guarantees is that it never reads outside the
//! datagram, never loops more than a fixed number of times, only answers for a
//! message whose framing is consistent, and reads the same USERNAME str0m will
//! authenticate (a request with two is refused).

/// The fixed cookie that marks RFC 5389 STUN.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;
const ATTRIBUTE_HEADER_LEN: usize = 4;

/// Method Binding, class request. The only message that carries USERNAME in
/// ICE; responses and indications are routed by address instead.
const BINDING_REQUEST: u16 = 0x0001;

const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const ATTR_FINGERPRINT: u16 = 0x8028;

/// Two maximal ICE ufrags (256 characters each, RFC 8839) and the colon.
const MAX_USERNAME_LEN: usize = 513;

/// Real Binding requests carry well under 16 attributes; the cap bounds the
/// work an attacker can make us do per datagram.
const MAX_ATTRIBUTES: usize = 64;

/// The local ICE ufrag (ours, the first half of USERNAME) of a STUN Binding
/// request.
///
/// `None` for anything that is not a well-framed Binding request with a
/// USERNAME of the form `<local>:<remote>` where both parts are non-empty
/// UTF-8.
pub fn local_ufrag(datagram: &[u8]) -> Option<&str> {
    ufrag_pair(datagram).map(|(local, _)| local)
}

/// Both halves of a Binding request's USERNAME: `(local, remote)`.
///
/// Same rules as [`local_ufrag`]. The remote half is split at the first colon
/// and may itself contain colons; ICE ufrags cannot, so such a request will
/// simply fail authentication later.
pub fn ufrag_pair(datagram: &[u8]) -> Option<(&str, &str)> {
    let username = binding_request_username(datagram)?;
    let (local, remote) = username.split_once(':')?;
    if local.is_empty() || remote.is_empty() {
        return None;
    }
    Some((local, remote))
}

fn binding_request_username(datagram: &[u8]) -> Option<&str> {
    let (header, mut attributes) = datagram.split_at_checked(HEADER_LEN)?;

    let message_type = u16::from_be_bytes([header[0], header[1]]);
    let message_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if message_type != BINDING_REQUEST || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    // Attributes are padded, so a consistent length is a multiple of four;
    // a length that disagrees with the datagram means truncation or a lie.
    if !message_len.is_multiple_of(4) || message_len != attributes.len() {
        return None;
    }

    let mut username = None;
    for _ in 0..MAX_ATTRIBUTES {
        let Some((attribute_header, rest)) = attributes.split_at_checked(ATTRIBUTE_HEADER_LEN)
        else {
            // The end of the attributes.
            return username;
        };
        let attribute_type = u16::from_be_bytes([attribute_header[0], attribute_header[1]]);
        let value_len = usize::from(u16::from_be_bytes([
            attribute_header[2],
            attribute_header[3],
        ]));
        let padded_len = value_len.next_multiple_of(4);
        if padded_len > rest.len() {
            return None;
        }
        let value = &rest[..value_len];

        match attribute_type {
            ATTR_USERNAME => {
                // Two USERNAMEs: RFC 8489 has the first count, str0m reads the last. A
                // request routed by one and authenticated by the other is refused here
                // rather than left to disagree (found by the `stun` fuzz target).
                if username.is_some() || value_len > MAX_USERNAME_LEN {
                    return None;
                }
                username = Some(core::str::from_utf8(value).ok()?);
            }
            // Anything after the integrity attributes is not covered by them
            // and must be ignored (RFC 8489 section 14.5), so a USERNAME there
            // could be forged onto an otherwise valid request.
            ATTR_MESSAGE_INTEGRITY | ATTR_MESSAGE_INTEGRITY_SHA256 | ATTR_FINGERPRINT => {
                return username;
            }
            _ => {}
        }
        attributes = &rest[padded_len..];
    }
    // Every attribute was examined within the cap; more left over is past it.
    if attributes.is_empty() {
        username
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::XorShift;

    const TRANSACTION_ID: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn attribute(out: &mut Vec<u8>, attribute_type: u16, value: &[u8]) {
        out.extend_from_slice(&attribute_type.to_be_bytes());
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        // Non-zero padding: receivers must ignore its content.
        while !out.len().is_multiple_of(4) {
            out.push(0xAA);
        }
    }

    fn message(message_type: u16, attributes: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&message_type.to_be_bytes());
        m.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&TRANSACTION_ID);
        m.extend_from_slice(attributes);
        m
    }

    /// A Binding request shaped like the ones browsers send: USERNAME,
    /// ICE-CONTROLLING, PRIORITY, USE-CANDIDATE, MESSAGE-INTEGRITY,
    /// FINGERPRINT. The integrity values are fake; nothing here checks them.
    fn browser_binding_request(username: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        attribute(&mut a, 0xC057, &[0x00, 0x01, 0x00, 0x0a]); // GOOG-NETWORK-INFO
        attribute(&mut a, ATTR_USERNAME, username);
        attribute(&mut a, 0x802A, &[7; 8]); // ICE-CONTROLLING
        attribute(&mut a, 0x0024, &[0x6e, 0x7f, 0x1e, 0xff]); // PRIORITY
        attribute(&mut a, 0x0025, &[]); // USE-CANDIDATE
        attribute(&mut a, ATTR_MESSAGE_INTEGRITY, &[0x5a; 20]);
        attribute(&mut a, ATTR_FINGERPRINT, &[0x12, 0x34, 0x56, 0x78]);
        message(BINDING_REQUEST, &a)
    }

    #[test]
    fn browser_request() {
        let m = browser_binding_request(b"srvUfrag:Kx9+/b");
        assert_eq!(local_ufrag(&m), Some("srvUfrag"));
        assert_eq!(ufrag_pair(&m), Some(("srvUfrag", "Kx9+/b")));
    }

    #[test]
    fn username_lengths_with_every_padding() {
        // Usernames of length 3..=10 cover all four padding amounts.
        for remote_len in 1..=8 {
            let remote = "r".repeat(remote_len);
            let username = format!("a:{remote}");
            let m = browser_binding_request(username.as_bytes());
            assert_eq!(ufrag_pair(&m), Some(("a", remote.as_str())));
        }
    }

    #[test]
    fn username_first_attribute() {
        let mut a = Vec::new();
        attribute(&mut a, ATTR_USERNAME, b"local:remote");
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), Some("local"));
    }

    #[test]
    fn maximal_username_is_accepted() {
        let username = format!("{}:{}", "L".repeat(256), "R".repeat(256));
        assert_eq!(username.len(), MAX_USERNAME_LEN);
        let m = browser_binding_request(username.as_bytes());
        assert_eq!(local_ufrag(&m), Some("L".repeat(256).as_str()));

        let oversized = format!("{}:{}", "L".repeat(257), "R".repeat(256));
        assert_eq!(
            local_ufrag(&browser_binding_request(oversized.as_bytes())),
            None
        );
    }

    #[test]
    fn remote_part_may_contain_colon() {
        let m = browser_binding_request(b"local:re:mote");
        assert_eq!(ufrag_pair(&m), Some(("local", "re:mote")));
    }

    #[test]
    fn bad_usernames() {
        for username in [
            &b""[..],
            b"nocolon",
            b":remote",
            b"local:",
            b":",
            b"lo\xffcal:remote",
            b"local:re\xc3",
        ] {
            let m = browser_binding_request(username);
            assert_eq!(local_ufrag(&m), None, "{username:?}");
        }
    }

    #[test]
    fn unicode_username_is_returned_whole() {
        let m = browser_binding_request("ünï:cødé".as_bytes());
        assert_eq!(local_ufrag(&m), Some("ünï"));
    }

    #[test]
    fn no_username() {
        let mut a = Vec::new();
        attribute(&mut a, 0x0024, &[0, 0, 0, 1]);
        attribute(&mut a, ATTR_FINGERPRINT, &[0; 4]);
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), None);
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &[])), None);
    }

    #[test]
    fn username_after_integrity_is_ignored() {
        for integrity in [
            ATTR_MESSAGE_INTEGRITY,
            ATTR_MESSAGE_INTEGRITY_SHA256,
            ATTR_FINGERPRINT,
        ] {
            let mut a = Vec::new();
            attribute(&mut a, integrity, &[0; 20]);
            attribute(&mut a, ATTR_USERNAME, b"local:remote");
            assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), None);
        }
    }

    #[test]
    fn two_usernames_are_refused() {
        let mut a = Vec::new();
        attribute(&mut a, ATTR_USERNAME, b"first:x");
        attribute(&mut a, ATTR_USERNAME, b"second:x");
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), None);
        // A second USERNAME after the integrity attribute is outside the message.
        let mut a = Vec::new();
        attribute(&mut a, ATTR_USERNAME, b"first:x");
        attribute(&mut a, ATTR_MESSAGE_INTEGRITY, &[0; 20]);
        attribute(&mut a, ATTR_USERNAME, b"second:x");
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), Some("first"));
    }

    /// Found by the `stun` fuzz target: two USERNAME attributes, of which str0m reads the
    /// second and we read the first (`fuzz/artifacts/stun/crash-9e62…`, minimised by hand).
    #[test]
    fn fuzz_regression_two_usernames_disagree_with_str0m() {
        let datagram: [u8; 116] = [
            0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42, 0x35, 0xd0, 0xce, 0x88, 0xab, 0xc8,
            0x05, 0x37, 0x5a, 0xc4, 0x5e, 0x16, 0x00, 0x06, 0x00, 0x09, 0x00, 0x3a, 0x5a, 0x6b,
            0x37, 0x32, 0x35, 0x6c, 0x38, 0x00, 0x00, 0x16, 0x00, 0x06, 0x00, 0x09, 0x00, 0x3a,
            0x5a, 0x6b, 0x37, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x24, 0x00, 0x04, 0xfe, 0x25, 0xff, 0x00, 0x6e, 0xff, 0x00, 0x00,
            0x00, 0x08, 0x00, 0x14, 0xcf, 0x71, 0x5a, 0xe0, 0xe5, 0xdb, 0x68, 0x3f, 0xfe, 0x5d,
            0xad, 0xc8, 0x09, 0x4b, 0x9c, 0xbc, 0x52, 0x43, 0x39, 0xa0, 0x80, 0x28, 0x00, 0x04,
            0x4b, 0xab, 0xc7, 0x03,
        ];
        assert_eq!(ufrag_pair(&datagram), None);
    }

    #[test]
    fn only_binding_requests() {
        let mut a = Vec::new();
        attribute(&mut a, ATTR_USERNAME, b"local:remote");
        // Binding indication, success response, error response, Allocate,
        // and a type with the top bits set (not STUN at all).
        for message_type in [0x0011u16, 0x0101, 0x0111, 0x0003, 0xC001] {
            assert_eq!(local_ufrag(&message(message_type, &a)), None);
        }
    }

    #[test]
    fn wrong_cookie() {
        let mut m = browser_binding_request(b"local:remote");
        m[4] = 0;
        assert_eq!(local_ufrag(&m), None);
    }

    #[test]
    fn truncated_anywhere() {
        let m = browser_binding_request(b"local:remote");
        assert!(local_ufrag(&m).is_some());
        for len in 0..m.len() {
            assert_eq!(local_ufrag(&m[..len]), None, "truncated to {len}");
        }
        // Truncated, but with the length field fixed up to match: framing is
        // consistent, the attribute that runs past the end is not.
        let mut a = Vec::new();
        attribute(&mut a, ATTR_USERNAME, b"local:remote");
        for cut in (4..a.len()).step_by(4) {
            let short = message(BINDING_REQUEST, &a[..cut]);
            assert_eq!(local_ufrag(&short), None, "cut at {cut}");
        }
    }

    #[test]
    fn length_lies() {
        let m = browser_binding_request(b"local:remote");
        let real = u16::from_be_bytes([m[2], m[3]]);
        for lie in [0, real - 4, real + 4, real - 1, real + 1, u16::MAX] {
            let mut bad = m.clone();
            bad[2..4].copy_from_slice(&lie.to_be_bytes());
            assert_eq!(local_ufrag(&bad), None, "length {lie}");
        }

        // The attribute length claims more than the message holds.
        let mut a = Vec::new();
        attribute(&mut a, ATTR_USERNAME, b"local:remote");
        a[2..4].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), None);

        // An earlier attribute's length swallows the USERNAME.
        let mut a = Vec::new();
        attribute(&mut a, 0x0024, &[0, 0, 0, 1]);
        attribute(&mut a, ATTR_USERNAME, b"local:remote");
        a[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), None);
    }

    #[test]
    fn padding_must_be_present() {
        // "local:rem" is 9 bytes and needs 3 padding bytes. Without them the
        // message length is not a multiple of four.
        let mut unpadded = Vec::new();
        unpadded.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        unpadded.extend_from_slice(&9u16.to_be_bytes());
        unpadded.extend_from_slice(b"local:rem");
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &unpadded)), None);

        // The length field rounded up to claim the padding that is not
        // there: the datagram is shorter than the header says.
        let mut lying = message(BINDING_REQUEST, &unpadded);
        lying[2..4].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(local_ufrag(&lying), None);

        // A USERNAME in the middle whose padding is missing: the next
        // attribute starts one byte early, the walk misreads it, and the
        // answer is still a clean None rather than a misread username.
        let mut shifted = unpadded.clone();
        shifted.extend_from_slice(&[0, 0, 0]); // only to align the total
        attribute(&mut shifted, ATTR_FINGERPRINT, &[0; 4]);
        let mut a = Vec::new();
        attribute(&mut a, 0x0024, &[0, 0, 0, 1]);
        a[3] = 5; // PRIORITY claims 5 bytes: its padded 8 swallow USERNAME's header
        a.extend_from_slice(&shifted);
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), None);

        // Properly padded: accepted whatever the padding bytes hold.
        let mut good = unpadded;
        good.extend_from_slice(&[0xff, 0xfe, 0xfd]);
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &good)), Some("local"));
    }

    #[test]
    fn zero_length_inputs() {
        assert_eq!(local_ufrag(&[]), None);
        assert_eq!(local_ufrag(&[0; 20]), None);
        // A header-only Binding request with zero-length message.
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &[])), None);
        // A zero-length USERNAME.
        let mut a = Vec::new();
        attribute(&mut a, ATTR_USERNAME, b"");
        assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), None);
    }

    #[test]
    fn attribute_cap() {
        // USERNAME after 63 other attributes is the 64th examined: found.
        // After 64 it is beyond the cap: not found.
        for (filler, expected) in [(63, Some("local")), (64, None)] {
            let mut a = Vec::new();
            for _ in 0..filler {
                attribute(&mut a, 0x0025, &[]);
            }
            attribute(&mut a, ATTR_USERNAME, b"local:remote");
            assert_eq!(local_ufrag(&message(BINDING_REQUEST, &a)), expected);
        }
    }

    #[test]
    fn one_megabyte_of_garbage() {
        let mut rng = XorShift::new(1 << 20);
        let mut garbage = vec![0u8; 1 << 20];
        rng.fill(&mut garbage);
        assert_eq!(local_ufrag(&garbage), None);

        // Garbage behind a valid-looking header: the length cannot match.
        garbage[..20].copy_from_slice(&message(BINDING_REQUEST, &[])[..20]);
        assert_eq!(local_ufrag(&garbage), None);

        // All zeroes, all ones.
        assert_eq!(local_ufrag(&vec![0u8; 1 << 20]), None);
        assert_eq!(local_ufrag(&vec![0xffu8; 1 << 20]), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift::new(0x5354_554e);
        let header = message(BINDING_REQUEST, &[]);
        let mut buf = vec![0u8; 1500];
        let mut found = 0;
        for i in 0..100_000u32 {
            let len = rng.below(1500) as usize;
            let d = &mut buf[..len];
            rng.fill(d);
            // Most inputs get a valid header with a matching length, so the
            // attribute walk sees random TLVs instead of stopping at byte 0.
            if !i.is_multiple_of(4) && len >= 20 {
                let body = len - 20;
                d[..20].copy_from_slice(&header[..20]);
                d[2..4].copy_from_slice(&(body as u16).to_be_bytes());
                // Often make the first attribute a USERNAME.
                if i.is_multiple_of(2) && body >= 4 {
                    d[20..22].copy_from_slice(&ATTR_USERNAME.to_be_bytes());
                    let value_len = rng.below(body as u64 - 3) as u16;
                    d[22..24].copy_from_slice(&value_len.to_be_bytes());
                    if rng.below(2) == 0 {
                        for b in &mut d[24..24 + usize::from(value_len)] {
                            *b = b'a' + (*b % 26);
                        }
                        if value_len >= 3 {
                            d[24 + usize::from(value_len) / 2] = b':';
                        }
                    }
                }
            }
            if let Some(local) = local_ufrag(d) {
                assert!(!local.is_empty() && local.len() < MAX_USERNAME_LEN);
                found += 1;
            }
        }
        // The structured inputs reach the success path too.
        assert!(found > 0);
    }
}
