//! The on-disk record format: one version byte, then bincode (standard config) of the record.
//! The version byte lets a later release read records written by this one.

use serde::{de::DeserializeOwned, Serialize};

use super::StoreError;

/// Version of the message record layout. Bump it when `Message` changes shape, and keep a
/// decoder for every older version.
pub const RECORD_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    out.push(RECORD_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => {
            bincode::serde::decode_from_slice(rest, bincode::config::standard())
                .map(|(v, _)| v)
                .map_err(|e| StoreError::Corrupt(format!("cannot decode record: {e}")))
        }
        Some((v, _)) => Err(StoreError::Corrupt(format!(
            "record format version {v} is unknown to this release (it reads {RECORD_VERSION})"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

/// A record with every kind of field, for tests of the store's reading.
#[cfg(test)]
pub(super) fn sample() -> crate::model::Message {
    use crate::model::{Message, Priority, State};
    Message {
        id: 7,
        sender: "main".into(),
        to: "14155551234".into(),
        kind: "text".into(),
        priority: Priority::Normal,
        state: State::Queued,
        body: r#"{"type":"text","text":{"body":"hi"}}"#.into(),
        fallback_template: None,
        idempotency_key: Some("k1".into()),
        metadata: Some(r#"{"order":1}"#.into()),
        created_at_ms: 1,
        updated_at_ms: 1,
        next_attempt_at_ms: 1,
        expires_at_ms: None,
        attempts: 0,
        wamid: None,
        substituted_template: None,
        last_error: None,
        history: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    #[test]
    fn round_trip() {
        let m = sample();
        let bytes = encode(&m).unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        assert_eq!(decode::<Message>(&bytes).unwrap(), m);
    }

    #[test]
    fn unknown_version_is_an_error_not_garbage() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = 99;
        let e = decode::<Message>(&bytes).unwrap_err();
        assert!(e.to_string().contains("version 99"));
        assert!(decode::<Message>(&[]).is_err());
    }
}
