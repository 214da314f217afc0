//! Aliases from a WhatsApp user id (wa_id) to the numbers dialled to reach it, per sender.
//!
//! Meta answers a send with the wa_id it resolved `to` to (`contacts[0].wa_id`). For some
//! numbers that is not the dialled number: Brazilian mobiles registered before the ninth digit
//! keep a 12-digit wa_id, Mexico had `521` against `52`. Inbound messages and statuses carry the
//! wa_id while waq keys windows by the number as dialled, so a window opened by the wa_id must
//! open the dialled numbers' windows too; these aliases say which those are.
//!
//! Tree `wa_ids`: `sender \0 wa_id digits` → the dialled numbers (digits), comma-separated,
//! oldest first, at most `MAX_ALIASES` (sled values must stay small). Written only when a
//! send's wa_id differs from its dialled digits, and only when the alias is new.

use super::{window_key, Inner, Store, StoreError};

pub(super) const TREE: &str = "wa_ids";

/// One user is rarely dialled in more than two ways; the cap bounds a value whatever happens.
const MAX_ALIASES: usize = 8;

/// The digits of a phone number or wa_id (how windows and messages key recipients).
fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

fn decode(v: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(v)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The dialled numbers aliased to `wa_id` for `sender` (empty for almost every number).
pub(super) fn aliases(inner: &Inner, sender: &str, wa_id: &str) -> Result<Vec<String>, StoreError> {
    let wa_id = digits(wa_id);
    if wa_id.is_empty() {
        return Ok(Vec::new());
    }
    Ok(inner
        .wa_ids
        .get(window_key(sender, &wa_id))?
        .map(|v| decode(&v))
        .unwrap_or_default())
}

impl Store {
    /// The numbers a message from `from` to `sender` reaches the user at: `from` itself (as
    /// digits) and the numbers dialled to reach it when it is a wa_id.
    pub fn numbers_of(&self, sender: &str, from: &str) -> Result<Vec<String>, StoreError> {
        self.with(|inner| {
            let from = digits(from);
            let mut numbers = aliases(inner, sender, &from)?;
            numbers.retain(|n| *n != from);
            numbers.insert(0, from);
            Ok(numbers)
        })
    }

    /// Meta answered a send from `sender` to `to` (digits, as stored in the message) with
    /// `wa_id`. When the two differ, remembers that `to` is reached as `wa_id`, and carries an
    /// open window of `wa_id` over to `to` (never moving it backwards). Writes nothing when
    /// they are equal or the alias is already known. Returns whether a new alias was written.
    /// Durable with the next `commit()`, like the wamid of the same answer.
    pub fn learn_wa_id(&self, sender: &str, to: &str, wa_id: &str) -> Result<bool, StoreError> {
        let wa_id = digits(wa_id);
        let to = digits(to);
        if wa_id.is_empty() || to.is_empty() || wa_id == to {
            return Ok(false);
        }
        self.with(|inner| {
            let key = window_key(sender, &wa_id);
            // Every later send to the same number answers the same: a read, not a write.
            if let Some(v) = inner.wa_ids.get(&key)? {
                if decode(&v).contains(&to) {
                    return Ok(false);
                }
            }
            let mut added = false;
            inner.wa_ids.update_and_fetch(&key, |old| {
                let mut list = old.map(decode).unwrap_or_default();
                added = !list.contains(&to);
                if added {
                    list.push(to.clone());
                    // The oldest alias goes first: the newest answer is the best guess.
                    let excess = list.len().saturating_sub(MAX_ALIASES);
                    list.drain(..excess);
                }
                Some(list.join(",").into_bytes())
            })?;
            if added {
                if let Some(at) = super::windows::window_time(inner, sender, &wa_id)? {
                    super::windows::raise_window(inner, sender, &to, at)?;
                }
            }
            Ok(added)
        })
    }

    /// The dialled numbers known to reach `wa_id` for `sender`.
    pub fn dialled_numbers(&self, sender: &str, wa_id: &str) -> Result<Vec<String>, StoreError> {
        self.with(|inner| aliases(inner, sender, wa_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_leniently() {
        assert_eq!(
            decode(b"5511987654321,551187654321"),
            vec!["5511987654321", "551187654321"]
        );
        assert!(decode(b"").is_empty());
        assert_eq!(digits("+55 (11) 98765-4321"), "5511987654321");
    }
}
