//! Webhooks: owns what the control plane tells an operator's application about rooms,
//! participants and tracks on this node, as signed JSON messages POSTed to configured URLs.
//!
//! The events are raised where the control plane learns them (`state.rs`: the directory
//! for rooms, the roster for participants and tracks), on the node where they happen. Raising
//! one costs a small JSON serialisation and a channel send per URL; nothing waits, so
//! signaling and media never feel a slow or dead receiver.
//!
//! Delivery, per URL: messages go to one of `lanes` FIFO queues chosen by a hash of the room
//! name, and each lane has one sender task that delivers its queue in order, retrying a
//! message (connection errors, timeouts, 5xx, 429) with exponential backoff and jitter until
//! it is delivered or has had `max_attempts` tries. A retrying room therefore holds back only
//! the rooms that share its lane, never reorders its own events, and never touches another
//! URL. At most `queue` messages wait per URL (over all its lanes, not counting the one each
//! lane is sending); past it the newest message is dropped and counted, so that what a
//! receiver has seen of a room stays an unbroken prefix of its history up to the gap.
//!
//! Signatures follow Standard Webhooks: `webhook-id`, `webhook-timestamp` (unix seconds of
//! the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed by the decoded `whsec_` secret.
//!
//! This module owns the `[webhooks]` settings; `event.rs` the messages, `signing.rs` the
//! secret and signatures, `delivery.rs` the queues, lanes, retries and counters.

mod delivery;
mod event;
mod signing;

use std::time::Duration;

pub use delivery::{
    UrlCounters, WebhookCounters, WebhookCountersSnapshot, WebhookSnapshot, Webhooks,
};
pub use event::WebhookEvent;
pub use signing::{SECRET_BYTES, parse_secret, sign};

/// The most URLs `[webhooks] urls` may name.
pub const MAX_URLS: usize = 16;
/// The most lanes per URL.
pub const MAX_LANES: usize = 64;

/// Where and how to deliver webhooks.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Receivers; empty turns webhooks off.
    pub urls: Vec<reqwest::Url>,
    /// The decoded signing key ([`parse_secret`]).
    pub secret: Vec<u8>,
    /// Messages that may wait per URL.
    pub queue: usize,
    /// FIFO lanes (sender tasks) per URL; a room always uses the same one.
    pub lanes: usize,
    /// Tries per message, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one...
    pub backoff_base: Duration,
    /// ... up to this.
    pub backoff_max: Duration,
    /// One attempt's limit, connection included.
    pub request_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            secret: Vec::new(),
            queue: 1024,
            lanes: 4,
            max_attempts: 8,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, nor credentials a URL may carry.
        let urls: Vec<String> = self.urls.iter().map(redact).collect();
        f.debug_struct("WebhookConfig")
            .field("urls", &urls)
            .field("secret", &"<redacted>")
            .field("queue", &self.queue)
            .field("lanes", &self.lanes)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Why a `[webhooks]` setting was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum WebhookConfigError {
    /// The secret lacks the `whsec_` prefix.
    #[error("webhooks.secret must start with whsec_ (Standard Webhooks form)")]
    SecretPrefix,
    /// What follows the prefix is not base64.
    #[error("webhooks.secret is not base64 after whsec_")]
    SecretEncoding,
    /// The decoded secret is too short or too long.
    #[error("webhooks.secret decodes to {0} bytes; it must be 24 to 64")]
    SecretLength(usize),
    /// URLs are configured without a secret.
    #[error("webhooks.secret is required when webhooks.urls is set")]
    SecretMissing,
    /// A URL does not parse or is not http(s).
    #[error("webhooks.urls: {0}")]
    Url(String),
    /// A numeric setting is out of range.
    #[error("webhooks.{0}")]
    Range(&'static str),
}

/// Parse a receiver's URL: absolute, `http` or `https`.
pub fn parse_url(url: &str) -> Result<reqwest::Url, WebhookConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        WebhookConfigError::Url(format!(
            "{}: {e}",
            manifold_cluster::redact_url(url.split('?').next().unwrap_or(""))
        ))
    })?;
    match parsed.scheme() {
        "http" => Ok(parsed),
        // reqwest is built without TLS here (its rustls features would bring a second
        // crypto stack); a plain-HTTP receiver behind a local TLS-terminating proxy works.
        "https" => Err(WebhookConfigError::Url(format!(
            "{}: https receivers are not supported yet; use http:// (e.g. through a local proxy)",
            redact(&parsed)
        ))),
        other => Err(WebhookConfigError::Url(format!(
            "{}: scheme {other} is not http",
            redact(&parsed)
        ))),
    }
}

impl WebhookConfig {
    /// Check the numeric settings and that a secret comes with URLs.
    pub fn validate(&self) -> Result<(), WebhookConfigError> {
        if self.urls.len() > MAX_URLS {
            return Err(WebhookConfigError::Url(format!(
                "{} URLs; at most {MAX_URLS}",
                self.urls.len()
            )));
        }
        if !self.urls.is_empty() && self.secret.is_empty() {
            return Err(WebhookConfigError::SecretMissing);
        }
        if self.queue == 0 || self.queue > 1 << 20 {
            return Err(WebhookConfigError::Range("queue must be 1 to 1048576"));
        }
        if self.lanes == 0 || self.lanes > MAX_LANES {
            return Err(WebhookConfigError::Range("lanes must be 1 to 64"));
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(WebhookConfigError::Range("max_attempts must be 1 to 100"));
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(WebhookConfigError::Range(
                "backoff_base_ms must be at least 1 and backoff_max_ms at least backoff_base_ms",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(WebhookConfigError::Range(
                "request_timeout_ms must be at least 1",
            ));
        }
        Ok(())
    }
}
/// A URL for logs: no userinfo, no query or fragment.
fn redact(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    manifold_cluster::redact_url(shown.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_and_never_print_credentials() {
        assert!(parse_url("http://127.0.0.1:9/hook").is_ok());
        assert!(matches!(
            parse_url("ftp://x/"),
            Err(WebhookConfigError::Url(_))
        ));
        assert!(parse_url("not a url").is_err());
        let config = WebhookConfig {
            urls: vec![parse_url("http://ops:hunter2@hooks.local/in?token=hunter3").unwrap()],
            secret: vec![7; 32],
            ..Default::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter"), "{printed}");
        assert!(!printed.contains("[7, 7"), "{printed}");
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let ok = WebhookConfig {
            urls: vec![parse_url("http://127.0.0.1:9/").unwrap()],
            secret: vec![1; 24],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            WebhookConfig {
                secret: Vec::new(),
                ..ok.clone()
            },
            WebhookConfig {
                queue: 0,
                ..ok.clone()
            },
            WebhookConfig {
                lanes: 0,
                ..ok.clone()
            },
            WebhookConfig {
                max_attempts: 0,
                ..ok.clone()
            },
            WebhookConfig {
                backoff_max: Duration::from_millis(1),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
