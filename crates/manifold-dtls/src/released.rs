//! What a media-only DTLS session keeps once OpenSSL's state is freed after the handshake.
//!
//! A session without a data channel sends and receives no DTLS record between the end of
//! its handshake and its close, yet OpenSSL holds about 90 KB per session for it (the
//! handshake buffer it keeps for retransmission, the record layers and their buffers).
//! [`Released`] keeps the three things such a session can still need, in well under 1 KB:
//!
//! - **Our final flight**, as the DTLS server: if it was lost, the client retransmits its
//!   own final flight, and we send ours again (as OpenSSL would). The client's flight is
//!   recognised by its `Finished`, the one handshake record of epoch 1.
//! - **Our close_notify**, made by OpenSSL before it was freed (the next record of our
//!   epoch), sent when the session closes politely.
//! - **The peer's write key**, so that its close_notify (or any alert) is authenticated
//!   before the session is closed for it: an alert record is decrypted with the key the
//!   TLS 1.2 key expansion gives (RFC 5246 §6.3) and the AEAD nonce and additional data of
//!   RFC 5288 §3 and RFC 6347 §4.1.2.1. A forged alert fails authentication and is dropped.
//!
//! Only the AES-GCM suites are handled here (what browsers and str0m negotiate); a session
//! on any other suite keeps OpenSSL.

use aws_lc_rs::hmac;
use openssl::ssl::SslRef;
use openssl::symm::{Cipher, decrypt_aead};

/// DTLS record header: type, version, epoch, sequence number, length.
const HEADER: usize = 13;
/// AES-GCM record expansion: the explicit nonce before the ciphertext, the tag after it.
const EXPLICIT_NONCE: usize = 8;
const TAG: usize = 16;
/// An alert's plaintext: level and description.
const ALERT: usize = 2;
const ALERT_RECORD: u8 = 21;
const HANDSHAKE: u8 = 22;
/// How many times our final flight is sent again at most: OpenSSL's own client gives up
/// after 12 retransmissions, and the bound keeps a peer replaying its `Finished` from
/// making us send without end.
const MAX_RESENDS: u32 = 12;

/// What one datagram from the peer asks of a released session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Nothing: application data (no data channel was negotiated), a replay, junk.
    Ignore,
    /// The peer retransmitted its final flight: it lost ours.
    Resend,
    /// An authenticated alert: the peer closed (close_notify) or failed the session.
    Closed,
}

/// The state of a DTLS 1.2 session after OpenSSL is freed (see the module's doc).
pub(crate) struct Released {
    peer: GcmKey,
    last_flight: Vec<Vec<u8>>,
    farewell: Vec<Vec<u8>>,
    resends: u32,
}

impl Released {
    /// The state to keep from `ssl`, a finished handshake in which we were the client if
    /// `active`. `last_flight` is what we sent last (empty as the client, whose `Finished`
    /// the server has acknowledged with its own). `None` if the suite is not one handled
    /// here.
    pub(crate) fn new(ssl: &SslRef, active: bool, last_flight: Vec<Vec<u8>>) -> Option<Released> {
        let peer = GcmKey::of_peer(ssl, active)?;
        Some(Released {
            peer,
            last_flight,
            farewell: Vec::new(),
            resends: 0,
        })
    }

    /// Our close_notify, to send on [`Released::take_farewell`].
    pub(crate) fn set_farewell(&mut self, farewell: Vec<Vec<u8>>) {
        self.farewell = farewell;
    }

    /// What `datagram` (every record in it) asks for.
    pub(crate) fn classify(&self, datagram: &[u8]) -> Incoming {
        let mut verdict = Incoming::Ignore;
        let mut rest = datagram;
        while rest.len() >= HEADER {
            let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
            let Some(record) = rest.get(..HEADER + len) else {
                break;
            };
            let epoch = u16::from_be_bytes([record[3], record[4]]);
            match record[0] {
                ALERT_RECORD if epoch >= 1 && self.peer.opens(record) => {
                    return Incoming::Closed;
                }
                HANDSHAKE if epoch >= 1 && !self.last_flight.is_empty() => {
                    verdict = Incoming::Resend;
                }
                _ => {}
            }
            rest = &rest[HEADER + len..];
        }
        verdict
    }

    /// Our final flight again, while the bound allows.
    pub(crate) fn resend(&mut self) -> Vec<Vec<u8>> {
        if self.resends >= MAX_RESENDS {
            return Vec::new();
        }
        self.resends += 1;
        self.last_flight.clone()
    }

    /// Our close_notify, once.
    pub(crate) fn take_farewell(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.farewell)
    }
}

/// One direction's AES-GCM key and implicit nonce part (the "write IV", 4 bytes).
struct GcmKey {
    cipher: Cipher,
    key: Vec<u8>,
    salt: [u8; 4],
}

impl GcmKey {
    /// The peer's write key: the client's if we are the server, the server's otherwise.
    fn of_peer(ssl: &SslRef, active: bool) -> Option<GcmKey> {
        let (cipher, prf) = match ssl.current_cipher()?.name() {
            "ECDHE-ECDSA-AES128-GCM-SHA256" | "ECDHE-RSA-AES128-GCM-SHA256" => {
                (Cipher::aes_128_gcm(), hmac::HMAC_SHA256)
            }
            "ECDHE-ECDSA-AES256-GCM-SHA384" | "ECDHE-RSA-AES256-GCM-SHA384" => {
                (Cipher::aes_256_gcm(), hmac::HMAC_SHA384)
            }
            _ => return None,
        };
        let mut master = [0u8; 48];
        if ssl.session()?.master_key(&mut master) != master.len() {
            return None;
        }
        let (mut client, mut server) = ([0u8; 32], [0u8; 32]);
        if ssl.client_random(&mut client) != 32 || ssl.server_random(&mut server) != 32 {
            return None;
        }
        let key_len = cipher.key_len();
        // RFC 5246 §6.3 for an AEAD suite (no MAC keys): client key, server key, client
        // IV, server IV.
        let block = key_expansion(prf, &master, &server, &client, 2 * key_len + 8);
        let (key, salt) = if active {
            (&block[key_len..2 * key_len], &block[2 * key_len + 4..])
        } else {
            (&block[..key_len], &block[2 * key_len..2 * key_len + 4])
        };
        Some(GcmKey {
            cipher,
            key: key.to_vec(),
            salt: salt.try_into().ok()?,
        })
    }

    /// Whether `record` (header and fragment) is an alert this key authenticates.
    fn opens(&self, record: &[u8]) -> bool {
        let fragment = &record[HEADER..];
        if fragment.len() != EXPLICIT_NONCE + ALERT + TAG {
            return false;
        }
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(&fragment[..EXPLICIT_NONCE]);
        // Epoch and sequence number, type, version, plaintext length.
        let mut aad = [0u8; 13];
        aad[..8].copy_from_slice(&record[3..11]);
        aad[8] = record[0];
        aad[9..11].copy_from_slice(&record[1..3]);
        aad[11..].copy_from_slice(&(ALERT as u16).to_be_bytes());
        let (body, tag) = fragment[EXPLICIT_NONCE..].split_at(ALERT);
        decrypt_aead(self.cipher, &self.key, Some(&nonce), &aad, body, tag).is_ok()
    }
}

/// TLS 1.2's PRF with the label "key expansion" (RFC 5246 §5, §6.3), `len` bytes.
fn key_expansion(
    prf: hmac::Algorithm,
    master: &[u8],
    server_random: &[u8],
    client_random: &[u8],
    len: usize,
) -> Vec<u8> {
    p_hash(
        prf,
        master,
        &[b"key expansion", server_random, client_random],
        len,
    )
}

/// `P_hash(secret, seed)` of RFC 5246 §5, the seed given in parts (label first), `len`
/// bytes: `HMAC(secret, A(1) || seed) || HMAC(secret, A(2) || seed) || …` with
/// `A(0) = seed`, `A(i) = HMAC(secret, A(i-1))`. On aws-lc-rs's HMAC: one key set-up for the
/// whole expansion, where OpenSSL's EVP interface fetched and built a MAC per call (a
/// twentieth of a join's instructions).
fn p_hash(prf: hmac::Algorithm, secret: &[u8], seed: &[&[u8]], len: usize) -> Vec<u8> {
    let key = hmac::Key::new(prf, secret);
    let mac = |first: &[u8], rest: &[&[u8]]| {
        let mut c = hmac::Context::with_key(&key);
        c.update(first);
        for p in rest {
            c.update(p);
        }
        c.sign()
    };
    let mut out = Vec::with_capacity(len + prf.digest_algorithm().output_len());
    let mut a = mac(&[], seed);
    while out.len() < len {
        out.extend_from_slice(mac(a.as_ref(), seed).as_ref());
        a = mac(a.as_ref(), &[]);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS 1.2 PRF test vector for SHA-256 circulated on the IETF TLS list (secret,
    /// label "test label", seed, 100 bytes), which several TLS stacks test with.
    #[test]
    fn p_sha256_matches_the_published_vector() {
        let secret = hex("9bbe436ba940f017b17652849a71db35");
        let seed = hex("a0ba9f936cda311827a6f796ffd5198c");
        let expected = hex(
            "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66",
        );
        let out = p_hash(
            hmac::HMAC_SHA256,
            &secret,
            &[b"test label", &seed],
            expected.len(),
        );
        assert_eq!(out, expected);
    }

    /// SHA-384 (the AES-256-GCM suites) against the definition computed with OpenSSL's HMAC.
    #[test]
    fn p_sha384_matches_its_definition() {
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::sign::Signer;
        let (secret, seed) = (b"a secret of some length", b"and a seed");
        let key = PKey::hmac(secret).unwrap();
        let hmac = |parts: &[&[u8]]| {
            let mut s = Signer::new(MessageDigest::sha384(), &key).unwrap();
            for p in parts {
                s.update(p).unwrap();
            }
            s.sign_to_vec().unwrap()
        };
        let a1 = hmac(&[b"label", seed]);
        let a2 = hmac(&[&a1]);
        let mut expected = hmac(&[&a1, b"label", seed]);
        expected.extend(hmac(&[&a2, b"label", seed]));
        expected.truncate(72);
        let out = p_hash(hmac::HMAC_SHA384, secret, &[b"label", seed], 72);
        assert_eq!(out, expected);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
