//! The verification handshake: Meta calls `GET {path}?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C`
//! when the callback URL is saved, and expects `C` back verbatim when `T` is ours.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The challenge to echo, or `None` (answer 403).
pub fn challenge(query: &HashMap<String, String>, verify_token: &str) -> Option<String> {
    if query.get("hub.mode").map(String::as_str) != Some("subscribe") {
        return None;
    }
    let given = query.get("hub.verify_token")?;
    // An unset token must not match an empty one.
    if verify_token.is_empty() || !same_secret(given, verify_token) {
        return None;
    }
    query.get("hub.challenge").cloned()
}

/// Constant-time equality that does not leak the length either: both sides are hashed first.
fn same_secret(a: &str, b: &str) -> bool {
    let ha = Sha256::digest(a.as_bytes());
    let hb = Sha256::digest(b.as_bytes());
    ha.ct_eq(&hb).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn echoes_only_for_the_right_token() {
        let ok = q(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "tok"),
            ("hub.challenge", "1158201444"),
        ]);
        assert_eq!(challenge(&ok, "tok").as_deref(), Some("1158201444"));
        assert_eq!(challenge(&ok, "other"), None);
        assert_eq!(challenge(&ok, ""), None);
        let mut bad_mode = ok.clone();
        bad_mode.insert("hub.mode".into(), "unsubscribe".into());
        assert_eq!(challenge(&bad_mode, "tok"), None);
        let mut no_token = ok.clone();
        no_token.remove("hub.verify_token");
        assert_eq!(challenge(&no_token, "tok"), None);
    }
}
