//! The verification handshake: Meta calls `GET {path}?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C`
//! when the callback URL is saved, and expects `C` back verbatim when `T` is ours.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The challenge to echo, or why not (answer 403 with it).
pub fn challenge(
    query: &HashMap<String, String>,
    verify_token: &str,
) -> Result<String, &'static str> {
    // An unset token must not match an empty one.
    if verify_token.is_empty() {
        return Err(
            "no verify token is configured (webhook.verify_token_env or verify_token_file)",
        );
    }
    if query.get("hub.mode").map(String::as_str) != Some("subscribe") {
        return Err("hub.mode is not \"subscribe\"");
    }
    let Some(given) = query.get("hub.verify_token") else {
        return Err("hub.verify_token is missing");
    };
    if !same_secret(given, verify_token) {
        return Err("hub.verify_token is not the configured verify token");
    }
    match query.get("hub.challenge") {
        Some(c) if !c.is_empty() => Ok(c.clone()),
        _ => Err("hub.challenge is missing or empty"),
    }
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
        assert_eq!(challenge(&ok, "tok").as_deref(), Ok("1158201444"));
        let refusal =
            |query: &HashMap<String, String>, token: &str| challenge(query, token).unwrap_err();
        assert!(refusal(&ok, "other").contains("not the configured verify token"));
        assert!(refusal(&ok, "").contains("no verify token is configured"));
        let mut bad_mode = ok.clone();
        bad_mode.insert("hub.mode".into(), "unsubscribe".into());
        assert!(refusal(&bad_mode, "tok").contains("hub.mode"));
        let mut no_token = ok.clone();
        no_token.remove("hub.verify_token");
        assert!(refusal(&no_token, "tok").contains("hub.verify_token is missing"));
        for challenge_given in [None, Some("")] {
            let mut without = ok.clone();
            without.remove("hub.challenge");
            if let Some(c) = challenge_given {
                without.insert("hub.challenge".into(), c.into());
            }
            assert!(refusal(&without, "tok").contains("hub.challenge"));
        }
    }
}
