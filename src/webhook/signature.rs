//! `X-Hub-Signature-256`: Meta signs every webhook POST with HMAC-SHA256 of the raw body, keyed
//! with the app secret, sent as `sha256=<hex>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header name as HTTP libraries normalise it.
pub const HEADER: &str = "x-hub-signature-256";

const PREFIX: &str = "sha256=";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature-256 header is missing")]
    Missing,
    #[error("the X-Hub-Signature-256 header is not `sha256=<64 hex digits>`")]
    Malformed,
    #[error("the X-Hub-Signature-256 signature does not match the body")]
    Mismatch,
}

fn mac(secret: &[u8], body: &[u8]) -> Option<[u8; 32]> {
    // HMAC takes keys of any length; the error case cannot happen but is not worth a panic.
    let mut m = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    m.update(body);
    Some(m.finalize().into_bytes().into())
}

/// The header value Meta would send for `body` (used to sign relayed payloads that lost theirs,
/// and by tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let tag = mac(secret, body).unwrap_or_default();
    format!("{PREFIX}{}", hex::encode(tag))
}

/// Checks `header` (the raw header value, if any) against the body in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_part = header
        .strip_prefix(PREFIX)
        .ok_or(SignatureError::Malformed)?;
    let mut given = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut given).map_err(|_| SignatureError::Malformed)?;
    let expected = mac(secret, body).ok_or(SignatureError::Mismatch)?;
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        let s = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            verify(b"Jefe", b"what do ya want for nothing?", Some(&s)),
            Ok(())
        );
    }

    #[test]
    fn rejects_missing_malformed_and_wrong() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let good = sign(b"k", body);
        assert_eq!(verify(b"k", body, None), Err(SignatureError::Missing));
        assert_eq!(
            verify(b"k", body, Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", body, Some(&good[..good.len() - 2])),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"other", body, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", b"{}", Some(&good)),
            Err(SignatureError::Mismatch)
        );
        // Upper-case hex is the same signature.
        let upper = format!("sha256={}", good[7..].to_uppercase());
        assert_eq!(verify(b"k", body, Some(&upper)), Ok(()));
    }
}
