//! TURN REST API credentials (the scheme coturn's `use-auth-secret` checks): which TURN
//! servers clients are told about, and the short-lived username and password each gets.
//!
//! Username `"{expiry_unix}:{identity}"`, password base64(HMAC-SHA1(secret, username)).
//! The TURN server needs only the same secret; nothing is stored per credential.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;

/// TURN servers and the secret shared with them.
#[derive(Clone, PartialEq)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URIs handed to clients.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    /// How long a credential stays valid.
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// One client's credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnCredential {
    /// `"{expiry_unix}:{identity}"`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
}

impl TurnConfig {
    /// The credential for `identity` made at `now_unix` (seconds since the epoch).
    pub fn credential(&self, identity: &str, now_unix: u64) -> TurnCredential {
        let expiry = now_unix.saturating_add(self.ttl.as_secs());
        // A ':' in the identity would be read as the end of the expiry by nobody, but keep
        // the username to one separator so it parses the same everywhere.
        let identity: String = identity
            .chars()
            .map(|c| if c == ':' { '_' } else { c })
            .collect();
        let username = format!("{expiry}:{identity}");
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, self.secret.as_bytes());
        let tag = hmac::sign(&key, username.as_bytes());
        let credential = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        TurnCredential {
            username,
            credential,
        }
    }

    /// The room protocol's `ice_servers` entry (RTCIceServer shape) for `identity`;
    /// empty when no TURN URL is configured.
    pub fn ice_servers(&self, identity: &str, now_unix: u64) -> Vec<serde_json::Value> {
        if self.urls.is_empty() {
            return Vec::new();
        }
        let c = self.credential(identity, now_unix);
        vec![serde_json::json!({
            "urls": self.urls,
            "username": c.username,
            "credential": c.credential,
        })]
    }

    /// RFC 9725 §4.6 `Link` header values, one per URL, for a WHIP/WHEP response.
    pub fn link_headers(&self, identity: &str, now_unix: u64) -> Vec<String> {
        if self.urls.is_empty() {
            return Vec::new();
        }
        let c = self.credential(identity, now_unix);
        self.urls
            .iter()
            .map(|u| {
                format!(
                    "<{u}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; \
                     credential-type=\"password\"",
                    quote(&c.username),
                    quote(&c.credential)
                )
            })
            .collect()
    }
}

/// Escapes `"` and `\` for a quoted-string parameter.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Seconds since the Unix epoch, from the wall clock.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TurnConfig {
        TurnConfig {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            secret: "north".into(),
            ttl: Duration::from_secs(600),
        }
    }

    #[test]
    fn credential_matches_coturn_scheme() {
        // Reference from `printf '1700000000:alice' | openssl dgst -sha1 -hmac north -binary | base64`.
        let c = config().credential("alice", 1_700_000_000 - 600);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn colon_in_identity_is_replaced() {
        let c = config().credential("a:b", 0);
        assert_eq!(c.username, "600:a_b");
    }

    #[test]
    fn link_header_shape() {
        let links = config().link_headers("alice", 1_700_000_000 - 600);
        assert_eq!(
            links,
            vec![
                "<turn:127.0.0.1:3478?transport=udp>; rel=\"ice-server\"; \
                 username=\"1700000000:alice\"; credential=\"Cd/49soE35ICqcJF/bCTn8Z4OyE=\"; \
                 credential-type=\"password\""
                    .to_string()
            ]
        );
    }

    #[test]
    fn no_urls_no_servers() {
        let mut c = config();
        c.urls.clear();
        assert!(c.ice_servers("alice", 0).is_empty());
        assert!(c.link_headers("alice", 0).is_empty());
    }

    #[test]
    fn debug_hides_secret() {
        assert!(!format!("{:?}", config()).contains("north"));
    }
}
