//! Messages between nodes: subjects in NATS's dotted form, with `*` (one token) and `>`
//! (the rest) wildcards in subscriptions, delivered through bounded queues: a subscriber
//! that does not keep up loses messages (counted), never slows the sender.

use tokio::sync::mpsc;

use crate::{BoxFuture, ClusterError};

/// Longest subject accepted.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Most subscriptions one bus holds at once (each is a bounded queue).
pub const MAX_SUBSCRIPTIONS: usize = 4096;

/// One message as a subscriber receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusMessage {
    /// The subject it was published on.
    pub subject: String,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// A live subscription: messages arrive on `rx`; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    /// Incoming messages.
    pub rx: mpsc::Receiver<BusMessage>,
}

/// Publish and subscribe between nodes.
pub trait Bus: Send + Sync {
    /// Send `payload` to every subscription whose pattern matches `subject` (which has no
    /// wildcard).
    fn publish(&self, subject: String, payload: Vec<u8>)
    -> BoxFuture<'_, Result<(), ClusterError>>;

    /// Receive what is published on subjects matching `pattern`, queued up to `capacity`
    /// messages.
    fn subscribe(
        &self,
        pattern: String,
        capacity: usize,
    ) -> BoxFuture<'_, Result<Subscription, ClusterError>>;

    /// Messages dropped because a subscriber's queue was full, since start.
    fn dropped(&self) -> u64;
}

/// Whether `subject` matches `pattern` (`*`: one token, `>`: one or more trailing tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A subject or pattern fit to use: bounded, dotted tokens of printable ASCII without
/// spaces; wildcards only as whole tokens, `>` only last, and none in a subject.
pub(crate) fn check_subject(s: &str, pattern: bool) -> Result<(), ClusterError> {
    let bad = |why: &str| {
        Err(ClusterError::Malformed(format!(
            "subject {:?}: {why}",
            s.chars().take(80).collect::<String>()
        )))
    };
    if s.is_empty() || s.len() > MAX_SUBJECT_BYTES {
        return bad("must be 1 to 256 bytes");
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("empty token or a character that is not printable ASCII");
        }
        let wild = *t == "*" || *t == ">";
        if (t.contains('*') || t.contains('>')) && !wild {
            return bad("a wildcard must be a whole token");
        }
        if wild && !pattern {
            return bad("no wildcards in a subject");
        }
        if *t == ">" && i + 1 != tokens.len() {
            return bad("`>` must be the last token");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_nats_does() {
        assert!(subject_matches("room.r1.events", "room.r1.events"));
        assert!(subject_matches("room.*.events", "room.r1.events"));
        assert!(!subject_matches("room.*.events", "room.r1.media"));
        assert!(subject_matches("room.>", "room.r1.media.t1"));
        assert!(!subject_matches("room.>", "room"));
        assert!(!subject_matches("room.r1", "room.r1.events"));
        assert!(!subject_matches("room.r1.events", "room.r1"));
    }

    #[test]
    fn subjects_and_patterns_are_checked() {
        assert!(check_subject("room.r1.events", false).is_ok());
        assert!(check_subject("room.*.>", true).is_ok());
        for bad in ["", "a..b", "a.*", "a.b*", "a.>.b", "a b", &"x".repeat(300)] {
            assert!(check_subject(bad, false).is_err(), "{bad:?}");
        }
        assert!(check_subject("a.>.b", true).is_err());
        assert!(check_subject("a.b>", true).is_err());
    }
}
