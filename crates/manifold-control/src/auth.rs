//! Access tokens: HS256 JWTs carrying a room, an identity, grants and an expiry. Minting
//! (for `manifold token`) and verification (for every endpoint) live together so the two
//! can never disagree on the format.
//!
//! With no key configured the server runs in dev mode: a token is optional, and without one
//! the caller gets every grant in every room. Dev mode signs with a random key made at start,
//! so the dev-only token endpoint can hand out tokens that carry an identity and a name.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use manifold_api::{Grants, Identity, RoomName};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Shortest signing key accepted: HS256 is only as strong as its key.
pub const MIN_KEY_BYTES: usize = 32;

/// Longest token accepted, in bytes (tokens come from outside).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The claims of a Manifold access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The identity.
    pub sub: String,
    /// The room the token is for; absent means every room (admin tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// What the bearer may do.
    #[serde(default)]
    pub grants: Grants,
    /// Display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issued at (seconds since the Unix epoch).
    pub iat: u64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: u64,
}

/// What a verified request may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The identity the token names, if there was a token.
    pub identity: Option<Identity>,
    /// The room the token is limited to, if any.
    pub room: Option<RoomName>,
    /// Its grants.
    pub grants: Grants,
    /// Display name from the token.
    pub name: Option<String>,
}

impl Access {
    /// Fail unless this access covers `room`.
    pub fn check_room(&self, room: &RoomName) -> Result<(), ApiError> {
        match &self.room {
            Some(r) if r != room => Err(ApiError::Forbidden(format!(
                "the token is for room {r}, not {room}"
            ))),
            _ => Ok(()),
        }
    }

    /// Fail unless this access covers every room: what spans the server (its statistics,
    /// the list of rooms) is not for a token limited to one room, admin or not.
    pub fn check_every_room(&self) -> Result<(), ApiError> {
        match &self.room {
            Some(r) => Err(ApiError::Forbidden(format!(
                "the token is for room {r} only; this needs a token for every room"
            ))),
            None => Ok(()),
        }
    }

    /// Fail unless this access has the grant `pick` selects.
    pub fn check_grant(&self, pick: fn(&Grants) -> bool, name: &str) -> Result<(), ApiError> {
        if pick(&self.grants) || self.grants.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token lacks the {name} grant"
            )))
        }
    }
}

/// Verifies tokens, or lets everything through in dev mode.
#[derive(Clone)]
pub struct Auth {
    key: (EncodingKey, DecodingKey),
    dev: bool,
    failures: Arc<AuthFailures>,
}

/// Why a token was refused: the label of `manifold_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token where one is required.
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong,
    /// Past its expiry.
    Expired,
    /// Not valid yet.
    NotYetValid,
    /// Signed with another key.
    BadSignature,
    /// Not HS256.
    BadAlgorithm,
    /// Not a JWT, or claims a Manifold token does not carry.
    Malformed,
    /// A claim (identity, room) that does not parse, or any other refusal.
    Invalid,
}

impl AuthFailure {
    /// Every reason, in the order of [`AuthFailures`].
    pub const ALL: [AuthFailure; 8] = [
        AuthFailure::Missing,
        AuthFailure::TooLong,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::BadSignature,
        AuthFailure::BadAlgorithm,
        AuthFailure::Malformed,
        AuthFailure::Invalid,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::TooLong => "too_long",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::BadAlgorithm => "bad_algorithm",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Invalid => "invalid",
        }
    }
}

/// Tokens refused, by reason (control plane only: no media path touches these).
#[derive(Debug, Default)]
pub struct AuthFailures([AtomicU64; 8]);

impl AuthFailures {
    fn bump(&self, why: AuthFailure) {
        if let Some(c) = self.0.get(why as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each reason with its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        AuthFailure::ALL
            .iter()
            .zip(&self.0)
            .map(|(r, c)| (r.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Auth {
    /// Auth with `key`, or dev mode with `None`. Keys shorter than [`MIN_KEY_BYTES`] are
    /// refused.
    pub fn new(key: Option<&str>) -> Result<Self, String> {
        let (secret, dev) = match key {
            None => (rand::random::<[u8; 32]>().to_vec(), true),
            Some(k) if k.len() < MIN_KEY_BYTES => {
                return Err(format!(
                    "the auth key must be at least {MIN_KEY_BYTES} bytes long"
                ));
            }
            Some(k) => (k.as_bytes().to_vec(), false),
        };
        Ok(Auth {
            key: (
                EncodingKey::from_secret(&secret),
                DecodingKey::from_secret(&secret),
            ),
            dev,
            failures: Arc::default(),
        })
    }

    /// Tokens refused so far, by reason.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        self.failures.snapshot()
    }

    /// Is this dev mode (no key)?
    pub fn is_dev(&self) -> bool {
        self.dev
    }

    /// Mint a token (in dev mode, with the random key of this process).
    pub fn mint(
        &self,
        identity: &Identity,
        room: Option<&RoomName>,
        grants: Grants,
        name: Option<&str>,
        ttl: Duration,
    ) -> Result<String, String> {
        let (enc, _) = &self.key;
        let now = unix_now();
        let claims = Claims {
            sub: identity.as_str().to_owned(),
            room: room.map(|r| r.as_str().to_owned()),
            grants,
            name: name.map(str::to_owned),
            iat: now,
            exp: now.saturating_add(ttl.as_secs().max(1)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc)
            .map_err(|e| e.to_string())
    }

    /// Verify an optional bearer token. In dev mode a request without one gets every
    /// grant; a token that is present must be valid in either mode.
    pub fn verify(&self, token: Option<&str>) -> Result<Access, ApiError> {
        self.verify_counted(token).map_err(|(why, e)| {
            self.failures.bump(why);
            e
        })
    }

    fn verify_counted(&self, token: Option<&str>) -> Result<Access, (AuthFailure, ApiError)> {
        let (_, dec) = &self.key;
        if token.is_none() && self.dev {
            return Ok(Access {
                identity: None,
                room: None,
                grants: Grants::ALL,
                name: None,
            });
        }
        let token = token.ok_or_else(|| {
            (
                AuthFailure::Missing,
                ApiError::Unauthorized(
                    "an access token is required (Authorization: Bearer <token>)".into(),
                ),
            )
        })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err((
                AuthFailure::TooLong,
                ApiError::Unauthorized("the access token is too long".into()),
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, dec, &validation).map_err(token_error)?;
        let c = data.claims;
        let invalid = |e: ApiError| (AuthFailure::Invalid, e);
        let identity = Identity::parse(&c.sub)
            .map_err(|e| invalid(ApiError::Unauthorized(format!("the token's identity {e}"))))?;
        let room = c
            .room
            .as_deref()
            .map(RoomName::parse)
            .transpose()
            .map_err(|e| invalid(ApiError::Unauthorized(format!("the token's room {e}"))))?;
        Ok(Access {
            identity: Some(identity),
            room,
            grants: c.grants,
            name: c.name,
        })
    }
}

/// A verification failure, told in our words: the parser's own messages quote token
/// contents and library internals, which are not the client's business.
fn token_error(e: jsonwebtoken::errors::Error) -> (AuthFailure, ApiError) {
    use AuthFailure as F;
    use jsonwebtoken::errors::ErrorKind;
    let (why, what) = match e.kind() {
        ErrorKind::ExpiredSignature => (F::Expired, "the access token has expired"),
        ErrorKind::ImmatureSignature => (F::NotYetValid, "the access token is not valid yet"),
        ErrorKind::InvalidSignature => (F::BadSignature, "the access token's signature is invalid"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => (
            F::BadAlgorithm,
            "the access token must be signed with HS256",
        ),
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
            (F::Malformed, "the access token has no expiry (exp)")
        }
        ErrorKind::MissingRequiredClaim(c) if c == "sub" => {
            (F::Malformed, "the access token names no identity (sub)")
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            (F::Malformed, "the access token is malformed")
        }
        // Header or claims that are not what a Manifold token carries, `alg: none`
        // included (no such algorithm is accepted).
        ErrorKind::Json(_) => (
            F::Malformed,
            "the access token's header or claims are invalid",
        ),
        _ => (F::Invalid, "the access token is invalid"),
    };
    (why, ApiError::Unauthorized(what.into()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn mint(auth: &Auth, room: &str, grants: Grants, ttl: Duration) -> String {
        auth.mint(
            &Identity::parse("alice").unwrap(),
            Some(&RoomName::parse(room).unwrap()),
            grants,
            None,
            ttl,
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let auth = Auth::new(Some(KEY)).unwrap();
        let t = mint(
            &auth,
            "r1",
            Grants {
                publish: true,
                ..Default::default()
            },
            Duration::from_secs(60),
        );
        let a = auth.verify(Some(&t)).unwrap();
        assert_eq!(a.identity.unwrap().as_str(), "alice");
        assert!(a.grants.publish && !a.grants.subscribe);
        let room = RoomName::parse("r1").unwrap();
        a_ok(&auth, &t, &room);
        let other = RoomName::parse("r2").unwrap();
        assert!(matches!(
            auth.verify(Some(&t)).unwrap().check_room(&other),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            auth.verify(Some(&t))
                .unwrap()
                .check_grant(|g| g.subscribe, "subscribe"),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn a_room_scoped_admin_covers_its_room_only() {
        let auth = Auth::new(Some(KEY)).unwrap();
        let t = mint(
            &auth,
            "r1",
            Grants {
                admin: true,
                ..Default::default()
            },
            Duration::from_secs(60),
        );
        let a = auth.verify(Some(&t)).unwrap();
        a.check_room(&RoomName::parse("r1").unwrap()).unwrap();
        assert!(matches!(
            a.check_room(&RoomName::parse("r2").unwrap()),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(a.check_every_room(), Err(ApiError::Forbidden(_))));
        let every = auth
            .mint(
                &Identity::parse("ops").unwrap(),
                None,
                Grants::ALL,
                None,
                Duration::from_secs(60),
            )
            .unwrap();
        auth.verify(Some(&every))
            .unwrap()
            .check_every_room()
            .unwrap();
    }

    fn a_ok(auth: &Auth, t: &str, room: &RoomName) {
        let a = auth.verify(Some(t)).unwrap();
        a.check_room(room).unwrap();
        a.check_grant(|g| g.publish, "publish").unwrap();
    }

    #[test]
    fn rejects_missing_bad_and_foreign_tokens() {
        let auth = Auth::new(Some(KEY)).unwrap();
        assert!(matches!(auth.verify(None), Err(ApiError::Unauthorized(_))));
        assert!(matches!(
            auth.verify(Some("garbage")),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            auth.verify(Some(&"a".repeat(10_000))),
            Err(ApiError::Unauthorized(_))
        ));
        let other = Auth::new(Some("another-key-another-key-another-key")).unwrap();
        let t = mint(&other, "r1", Grants::ALL, Duration::from_secs(60));
        assert!(matches!(
            auth.verify(Some(&t)),
            Err(ApiError::Unauthorized(m)) if m.contains("signature")
        ));
    }

    #[test]
    fn rejects_expired_tokens() {
        let auth = Auth::new(Some(KEY)).unwrap();
        let (enc, _) = &auth.key;
        let claims = Claims {
            sub: "alice".into(),
            room: None,
            grants: Grants::ALL,
            name: None,
            iat: 1,
            exp: 2,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc).unwrap();
        assert!(matches!(
            auth.verify(Some(&t)),
            Err(ApiError::Unauthorized(m)) if m.contains("expired")
        ));
    }

    #[test]
    fn dev_mode_grants_everything_and_checks_its_own_tokens() {
        let auth = Auth::new(None).unwrap();
        assert!(auth.is_dev());
        assert_eq!(auth.verify(None).unwrap().grants, Grants::ALL);
        let t = mint(&auth, "r", Grants::default(), Duration::from_secs(60));
        let a = auth.verify(Some(&t)).unwrap();
        assert_eq!(a.identity.unwrap().as_str(), "alice");
        assert_eq!(a.grants, Grants::default());
        assert!(matches!(
            auth.verify(Some("garbage")),
            Err(ApiError::Unauthorized(_))
        ));
        let other = Auth::new(None).unwrap();
        assert!(
            other.verify(Some(&t)).is_err(),
            "each process has its own dev key"
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Auth::new(Some("short")).is_err());
    }
}
