//! How text from outside (Moodle events, targets' answers) is stored in PostgreSQL, decided
//! once for every table: `text` and `jsonb` refuse the NUL character (U+0000), so stored copies
//! carry U+FFFD in its place. Where the exact value matters — a dead letter that will be
//! replayed — the writer keeps the exact JSON text beside it (`dead_letters.exact`). The
//! streams always hold the original. Input to the admin API is refused with a 422 instead.

use std::borrow::Cow;

use serde_json::Value;

/// `text` as PostgreSQL can store it.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

pub fn storable_opt(text: Option<&str>) -> Option<String> {
    text.map(|t| storable(t).into_owned())
}

/// Makes every string and key of `value` storable; returns whether anything changed.
pub fn make_storable(value: &mut Value) -> bool {
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\u{FFFD}");
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| make_storable(item) | changed),
        Value::Object(map) => {
            let dirty: Vec<String> = map.keys().filter(|k| k.contains('\0')).cloned().collect();
            let mut changed = !dirty.is_empty();
            for key in dirty {
                if let Some(v) = map.remove(&key) {
                    map.insert(key.replace('\0', "\u{FFFD}"), v);
                }
            }
            for item in map.values_mut() {
                changed |= make_storable(item);
            }
            changed
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_everywhere() {
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
        assert!(matches!(storable("clean"), Cow::Borrowed("clean")));
        let mut value = serde_json::json!({"k\u{0}": ["x\u{0}", 1, {"n": "\u{0}"}], "ok": "y"});
        assert!(make_storable(&mut value));
        assert_eq!(
            value,
            serde_json::json!({"k\u{FFFD}": ["x\u{FFFD}", 1, {"n": "\u{FFFD}"}], "ok": "y"})
        );
        assert!(!make_storable(&mut value), "nothing left to change");
    }
}
