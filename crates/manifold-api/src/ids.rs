//! Names and ids. Room names and identities come from outside (URLs, tokens), so they are
//! parsed once into types that can only hold valid values; participant and track ids are
//! minted by the server and printed as short prefixed hex strings.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a name or id did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    /// Empty input.
    Empty,
    /// Longer than the maximum.
    TooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// A character outside the allowed set.
    BadCharacter(char),
    /// Not of the `<prefix><hex>` form.
    Malformed,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("must not be empty"),
            IdError::TooLong { max } => write!(f, "must be at most {max} bytes"),
            IdError::BadCharacter(c) => write!(f, "character {c:?} is not allowed"),
            IdError::Malformed => f.write_str("malformed id"),
        }
    }
}

impl std::error::Error for IdError {}

/// A room's name: 1 to 64 characters from `A-Z a-z 0-9 _ - .`, so it can appear in a URL
/// path segment unescaped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(String);

impl RoomName {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Parse a room name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len(s, Self::MAX_LEN)?;
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(IdError::BadCharacter(c));
        }
        Ok(RoomName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who a participant is, as the token (or the client, in dev mode) says: 1 to 128 bytes,
/// no control characters. Two sessions with one identity in one room are one person.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity(String);

impl Identity {
    /// Longest accepted identity, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Parse an identity.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check_len(s, Self::MAX_LEN)?;
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(IdError::BadCharacter(c));
        }
        Ok(Identity(s.to_owned()))
    }

    /// The identity.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_len(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > max {
        return Err(IdError::TooLong { max });
    }
    Ok(())
}

macro_rules! string_newtype_conversions {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }

        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $t::parse(s)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype_conversions!(RoomName);
string_newtype_conversions!(Identity);

/// The OpenAPI schema of an id: a string of `min..=max` bytes matching `pattern`.
#[cfg(feature = "openapi")]
macro_rules! string_schema {
    ($t:ident, $min:expr, $max:expr, $pattern:expr, $doc:literal) => {
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some($min))
                    .max_length(Some($max))
                    .pattern(Some($pattern))
                    .description(Some($doc))
                    .into()
            }
        }
        impl utoipa::ToSchema for $t {}
    };
}

#[cfg(feature = "openapi")]
string_schema!(
    RoomName,
    1,
    RoomName::MAX_LEN,
    "^[A-Za-z0-9_.-]+$",
    "A room's name: 1 to 64 characters from A-Z a-z 0-9 _ - ."
);
#[cfg(feature = "openapi")]
string_schema!(
    Identity,
    1,
    Identity::MAX_LEN,
    "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
    "Who a participant is: 1 to 128 bytes, no control characters."
);

macro_rules! hex_id {
    ($(#[$doc:meta])* $t:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $t(pub u64);

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:016x}"), self.0)
            }
        }

        impl FromStr for $t {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let hex = s.strip_prefix($prefix).ok_or(IdError::Malformed)?;
                if hex.len() != 16 {
                    return Err(IdError::Malformed);
                }
                u64::from_str_radix(hex, 16).map($t).map_err(|_| IdError::Malformed)
            }
        }

        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
}

#[cfg(feature = "openapi")]
string_schema!(
    ParticipantId,
    17,
    17,
    "^p[0-9a-f]{16}$",
    "A participant session: `p` and 16 hex digits."
);
#[cfg(feature = "openapi")]
string_schema!(
    TrackId,
    17,
    17,
    "^t[0-9a-f]{16}$",
    "A published track: `t` and 16 hex digits."
);

hex_id!(
    /// A participant session, minted by the server. Printed as `p` and 16 hex digits.
    ParticipantId,
    "p"
);
hex_id!(
    /// A published track, minted by the server. Printed as `t` and 16 hex digits.
    TrackId,
    "t"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(RoomName::parse("demo-1.a_b").is_ok());
        assert_eq!(RoomName::parse(""), Err(IdError::Empty));
        assert_eq!(RoomName::parse("a/b"), Err(IdError::BadCharacter('/')));
        assert_eq!(RoomName::parse("ä"), Err(IdError::BadCharacter('ä')));
        assert_eq!(
            RoomName::parse(&"x".repeat(65)),
            Err(IdError::TooLong { max: 64 })
        );
        assert!(RoomName::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn identities() {
        assert!(Identity::parse("Ada Lovelace ✓").is_ok());
        assert_eq!(Identity::parse("a\nb"), Err(IdError::BadCharacter('\n')));
        assert!(Identity::parse(&"é".repeat(65)).is_err());
    }

    #[test]
    fn hex_ids_round_trip() {
        let p = ParticipantId(0xdead_beef);
        let s = p.to_string();
        assert_eq!(s, "p00000000deadbeef");
        assert_eq!(s.parse::<ParticipantId>(), Ok(p));
        assert_eq!(
            "t00000000deadbeef".parse::<ParticipantId>(),
            Err(IdError::Malformed)
        );
        assert_eq!("p123".parse::<ParticipantId>(), Err(IdError::Malformed));
        assert_eq!(
            "pzzzzzzzzzzzzzzzz".parse::<ParticipantId>(),
            Err(IdError::Malformed)
        );
        let json = serde_json_string(&TrackId(1));
        assert_eq!(json, "\"t0000000000000001\"");
    }

    fn serde_json_string<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn deserialize_rejects_bad_names() {
        assert!(serde_json::from_str::<RoomName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<RoomName>("\"not ok\"").is_err());
    }
}
