//! Canonical JSON: one byte sequence per JSON value, whatever its key order or whitespace, so
//! equal events hash equal.

use std::io::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 (hex) of the canonical form of `value`: object keys sorted, no whitespace, strings and
/// numbers as serde_json writes them.
pub(crate) fn hash(value: &Value) -> String {
    let mut hasher = HashWriter(Sha256::new());
    write_canonical(&mut hasher, value);
    hex::encode(hasher.0.finalize())
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_canonical(out: &mut HashWriter, value: &Value) {
    // Writing to a hasher cannot fail, and serde_json writes scalars infallibly.
    let _ = match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let _ = out.write_all(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    let _ = out.write_all(b",");
                }
                let _ = serde_json::to_writer(&mut *out, key);
                let _ = out.write_all(b":");
                if let Some(v) = map.get(key) {
                    write_canonical(out, v);
                }
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            let _ = out.write_all(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    let _ = out.write_all(b",");
                }
                write_canonical(out, item);
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(std::io::Error::other),
    };
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":null}}"#).expect("json");
        let b: Value = serde_json::from_str("{ \"a\" : { \"x\":null, \"y\":[1, 2] }, \"b\" : 1 }")
            .expect("json");
        assert_eq!(hash(&a), hash(&b));
    }

    #[test]
    fn different_values_hash_differently() {
        assert_ne!(
            hash(&json!({"courseid": 12})),
            hash(&json!({"courseid": 13}))
        );
        assert_ne!(hash(&json!({"id": 1})), hash(&json!({"id": "1"})));
        assert_ne!(hash(&json!([1, 2])), hash(&json!([2, 1])));
        assert_ne!(
            hash(&json!({"a": "b,c"})),
            hash(&json!({"a": "b", "c": null}))
        );
    }
}
