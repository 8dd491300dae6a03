//! Standard Webhooks signing: owns the `whsec_` secret's decoding and the
//! `webhook-signature` value, `v1,` and the base64 HMAC-SHA256 (aws-lc-rs) of
//! `{id}.{timestamp}.{body}`.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::WebhookConfigError;

/// Standard Webhooks' bounds on a secret's decoded length, in bytes.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Decode a Standard Webhooks secret, `whsec_` then base64 of 24 to 64 bytes.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, WebhookConfigError> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or(WebhookConfigError::SecretPrefix)?;
    // A bound before decoding: 64 bytes are 88 base64 characters.
    if b64.len() > 128 {
        return Err(WebhookConfigError::SecretLength(b64.len() * 3 / 4));
    }
    let key = BASE64
        .decode(b64)
        .map_err(|_| WebhookConfigError::SecretEncoding)?;
    if !SECRET_BYTES.contains(&key.len()) {
        return Err(WebhookConfigError::SecretLength(key.len()));
    }
    Ok(key)
}

/// `HMAC-SHA256("{id}.{timestamp}.{body}")` keyed by `key`, as a `webhook-signature` value.
pub fn sign(key: &hmac::Key, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", BASE64.encode(ctx.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_example_signs_as_published() {
        // The Standard Webhooks specification's example (also in its reference
        // libraries' tests); checked independently with Python's hmac module.
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused_by_name() {
        assert_eq!(
            parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(WebhookConfigError::SecretPrefix)
        );
        assert_eq!(
            parse_secret("whsec_not*base64"),
            Err(WebhookConfigError::SecretEncoding)
        );
        assert_eq!(
            parse_secret("whsec_c2hvcnQ="),
            Err(WebhookConfigError::SecretLength(5))
        );
        let long = format!("whsec_{}", "A".repeat(4000));
        assert!(matches!(
            parse_secret(&long),
            Err(WebhookConfigError::SecretLength(_))
        ));
    }
}
