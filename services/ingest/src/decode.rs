//! Turning a request body into a list of JSON events: one object, a JSON array, or NDJSON;
//! each item a Moodle event, MIH's queued-task wrapper `{ruleid, eventdata, …}`, or either of
//! those inside a keyed envelope `{"idempotency_key": "…", "event": {…}}`.

use serde_json::{Map, Value};

use crate::error::IngestError;
use mih_shared::error::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Ndjson,
}

/// Reads the body format from `Content-Type`; a missing header means JSON.
pub(crate) fn format_of(content_type: Option<&str>) -> Result<Format, IngestError> {
    let Some(raw) = content_type else {
        return Ok(Format::Json);
    };
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Ok(Format::Ndjson),
        other if other.starts_with("application/") && other.ends_with("+json") => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedMediaType(raw.to_owned())),
    }
}

/// One item of the request, with its position.
#[derive(Debug)]
pub(crate) struct Item {
    pub index: usize,
    pub value: Value,
    /// The item's own `idempotency_key` from a keyed envelope, as sent (checked later, with
    /// the rest of the item).
    pub key: Option<Value>,
}

/// Whether the request body held a single event or a batch (array or NDJSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Single,
    Batch,
}

/// Splits the body into items, refusing malformed JSON and batches over `max_events`.
pub(crate) fn decode(
    format: Format,
    body: &[u8],
    max_events: usize,
) -> Result<(Shape, Vec<Item>), IngestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::Malformed(vec![FieldError::new(
            None,
            None,
            "the body is empty",
        )]));
    }
    let (shape, values) = match format {
        Format::Json => decode_json(body, max_events)?,
        Format::Ndjson => (Shape::Batch, decode_ndjson(body, max_events)?),
    };
    if values.is_empty() {
        return Err(IngestError::Malformed(vec![FieldError::new(
            None,
            None,
            "the batch holds no events",
        )]));
    }
    let items = values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let (key, value) = open_envelope(value);
            Item {
                index,
                value: unwrap_queued_task(value),
                key,
            }
        })
        .collect();
    Ok((shape, items))
}

fn decode_json(body: &[u8], max_events: usize) -> Result<(Shape, Vec<Value>), IngestError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let hint = if e.to_string().contains("trailing characters") {
            " (several JSON documents one per line? send Content-Type: application/x-ndjson)"
        } else {
            ""
        };
        IngestError::Malformed(vec![FieldError::new(
            None,
            None,
            format!("the body is not valid JSON: {e}{hint}"),
        )])
    })?;
    match value {
        Value::Array(items) => {
            check_count(items.len(), max_events)?;
            Ok((Shape::Batch, items))
        }
        other => Ok((Shape::Single, vec![other])),
    }
}

fn decode_ndjson(body: &[u8], max_events: usize) -> Result<Vec<Value>, IngestError> {
    let lines: Vec<(usize, &[u8])> = body
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .collect();
    check_count(lines.len(), max_events)?;
    let mut values = Vec::with_capacity(lines.len());
    let mut errors = Vec::new();
    for (index, (line_no, line)) in lines.into_iter().enumerate() {
        match serde_json::from_slice::<Value>(line) {
            Ok(value) => values.push(value),
            Err(e) => errors.push(FieldError::new(
                Some(index),
                None,
                format!("line {} is not valid JSON: {e}", line_no + 1),
            )),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(IngestError::Malformed(errors))
    }
}

fn check_count(count: usize, max_events: usize) -> Result<(), IngestError> {
    if count > max_events {
        Err(IngestError::BatchTooLarge {
            count,
            max: max_events,
        })
    } else {
        Ok(())
    }
}

/// A keyed envelope `{"idempotency_key": …, "event": {…}}` gives the event its own dedup key,
/// so a sender that resends it in another batch is recognised. Anything else is the event.
fn open_envelope(value: Value) -> (Option<Value>, Value) {
    match value {
        Value::Object(mut map) if is_envelope(&map) => {
            let key = map.remove(ENVELOPE_KEY);
            (key, map.remove(ENVELOPE_EVENT).unwrap_or(Value::Null))
        }
        other => (None, other),
    }
}

const ENVELOPE_KEY: &str = "idempotency_key";
const ENVELOPE_EVENT: &str = "event";

fn is_envelope(map: &Map<String, Value>) -> bool {
    map.len() == 2
        && map.contains_key(ENVELOPE_KEY)
        && map.get(ENVELOPE_EVENT).is_some_and(Value::is_object)
}

/// MIH queues `{ruleid, eventdata, eventcontextid}`; the event is `eventdata`. Anything else is
/// taken as the event itself.
fn unwrap_queued_task(value: Value) -> Value {
    match value {
        Value::Object(mut map) if is_queued_task(&map) => {
            map.remove("eventdata").unwrap_or(Value::Null)
        }
        other => other,
    }
}

fn is_queued_task(map: &Map<String, Value>) -> bool {
    !map.contains_key("eventname") && map.get("eventdata").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_types_select_the_format() {
        assert_eq!(format_of(None).ok(), Some(Format::Json));
        assert_eq!(
            format_of(Some("application/json; charset=utf-8")).ok(),
            Some(Format::Json)
        );
        assert_eq!(
            format_of(Some("Application/X-NDJSON")).ok(),
            Some(Format::Ndjson)
        );
        assert!(matches!(
            format_of(Some("text/plain")),
            Err(IngestError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn single_object_array_and_ndjson() {
        let (shape, one) = decode(Format::Json, br#"{"a":1}"#, 10).expect("ok");
        assert_eq!((shape, one.len()), (Shape::Single, 1));
        let (shape, many) = decode(Format::Json, br#"[{"a":1},{"a":2}]"#, 10).expect("ok");
        assert_eq!((shape, many.len()), (Shape::Batch, 2));
        let (shape, lines) = decode(Format::Ndjson, b"{\"a\":1}\n\n{\"a\":2}\r\n", 10).expect("ok");
        assert_eq!((shape, lines.len()), (Shape::Batch, 2));
        assert_eq!(lines[1].index, 1);
    }

    #[test]
    fn queued_task_wrappers_are_unwrapped() {
        let body = json!({"ruleid": 4, "eventdata": {"eventname": "x"}, "eventcontextid": 1});
        let (_, items) = decode(Format::Json, body.to_string().as_bytes(), 10).expect("ok");
        assert_eq!(items[0].value, json!({"eventname": "x"}));
        // An event that merely has an `eventdata` key in it stays as it is.
        let event = json!({"eventname": "x", "eventdata": {"a": 1}});
        let (_, items) = decode(Format::Json, event.to_string().as_bytes(), 10).expect("ok");
        assert_eq!(items[0].value, event);
    }

    #[test]
    fn keyed_envelopes_give_their_event_its_own_key() {
        let body = json!([
            {"idempotency_key": "k-1", "event": {"eventname": "x"}},
            {"idempotency_key": "k-2", "event": {"ruleid": 4, "eventdata": {"eventname": "y"}}},
            {"eventname": "z"},
            // A third key means this is not an envelope but an event (which validation refuses).
            {"idempotency_key": "k-3", "event": {"eventname": "x"}, "crud": "c"}
        ]);
        let (_, items) = decode(Format::Json, body.to_string().as_bytes(), 10).expect("ok");
        assert_eq!(items[0].key, Some(json!("k-1")));
        assert_eq!(items[0].value, json!({"eventname": "x"}));
        assert_eq!(items[1].key, Some(json!("k-2")));
        assert_eq!(items[1].value, json!({"eventname": "y"}));
        assert_eq!(
            (&items[2].key, &items[2].value),
            (&None, &json!({"eventname": "z"}))
        );
        assert_eq!(items[3].key, None);
    }

    #[test]
    fn malformed_and_oversized_input_is_refused_naming_the_item() {
        assert!(matches!(
            decode(Format::Json, b"  ", 10),
            Err(IngestError::Malformed(_))
        ));
        assert!(matches!(
            decode(Format::Json, b"[]", 10),
            Err(IngestError::Malformed(_))
        ));
        assert!(matches!(
            decode(Format::Json, b"[1,2,3]", 2),
            Err(IngestError::BatchTooLarge { count: 3, max: 2 })
        ));
        match decode(Format::Ndjson, b"{}\n{oops\n{}", 10) {
            Err(IngestError::Malformed(errors)) => {
                assert_eq!(errors[0].index, Some(1));
                assert!(
                    errors[0].message.starts_with("line 2"),
                    "{}",
                    errors[0].message
                );
            }
            other => panic!("expected malformed, got {other:?}"),
        }
        match decode(Format::Json, b"{}\n{}", 10) {
            Err(IngestError::Malformed(errors)) => {
                assert!(
                    errors[0].message.contains("x-ndjson"),
                    "{}",
                    errors[0].message
                )
            }
            other => panic!("expected malformed, got {other:?}"),
        }
    }
}

/// Hostile bodies: decoding and validation never panic, every refusal names its item (and the
/// field, for objects), NDJSON errors name their line, and valid events round-trip.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::validate::validate;

    /// Decodes and validates as `POST /v1/events` does; checks the shape of every refusal.
    fn ingest(format: Format, body: &[u8]) -> Result<Vec<Map<String, Value>>, String> {
        let (_, items) = match decode(format, body, 1000) {
            Ok(decoded) => decoded,
            Err(IngestError::Malformed(errors)) => {
                assert!(!errors.is_empty());
                for error in &errors {
                    assert!(!error.message.is_empty());
                    if format == Format::Ndjson && error.index.is_some() {
                        assert!(error.message.starts_with("line "), "{}", error.message);
                    }
                }
                return Err("malformed".into());
            }
            Err(IngestError::BatchTooLarge { .. }) => return Err("too many".into()),
            Err(other) => panic!("unexpected refusal {other:?}"),
        };
        let mut valid = Vec::new();
        for item in items {
            let is_object = item.value.is_object();
            match validate(item.index, item.value) {
                Ok(event) => valid.push(event.data),
                Err(errors) => {
                    assert!(!errors.is_empty());
                    for error in &errors {
                        assert_eq!(error.index, Some(item.index));
                        assert_eq!(error.field.is_some(), is_object, "{error:?}");
                    }
                    return Err("invalid".into());
                }
            }
        }
        Ok(valid)
    }

    fn good() -> Value {
        json!({
            "eventname": "\\core\\event\\user_enrolment_created", "component": "core",
            "action": "created", "target": "user_enrolment", "objecttable": "user_enrolments",
            "objectid": 4411, "crud": "c", "edulevel": 0, "contextid": 187, "contextlevel": 50,
            "contextinstanceid": 12, "userid": 14, "courseid": 12, "relateduserid": 27,
            "anonymous": 0, "other": {"enrol": "manual"}, "timecreated": 1772008269
        })
    }

    /// The fields (with item 0) a single event is refused for.
    fn refused_fields(body: &str) -> Vec<String> {
        let (_, items) = decode(Format::Json, body.as_bytes(), 10).expect("decodes");
        let item = items.into_iter().next().expect("one item");
        match validate(0, item.value) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().filter_map(|e| e.field).collect(),
        }
    }

    fn with_raw(field: &str, raw: &str) -> String {
        let mut event = good();
        event[field] = json!("__placeholder__");
        event.to_string().replace("\"__placeholder__\"", raw)
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_stack_overflow() {
        for body in [
            "[".repeat(10_000),
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            "{\"a\":".repeat(10_000),
            format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)),
        ] {
            for format in [Format::Json, Format::Ndjson] {
                assert!(
                    matches!(
                        decode(format, body.as_bytes(), 1000),
                        Err(IngestError::Malformed(_))
                    ),
                    "{format:?}"
                );
            }
        }
        // Nesting within serde_json's limit inside `other` is kept as sent.
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(refused_fields(&with_raw("other", &deep)).is_empty());
    }

    #[test]
    fn numbers_at_the_edges_are_refused_naming_the_field() {
        for (field, raw) in [
            ("userid", "1e308"),
            ("userid", "1.0"),
            ("userid", "-0.0"),
            ("userid", "9223372036854775808"),
            ("userid", "18446744073709551616"),
            ("userid", "\"9223372036854775808\""),
            ("userid", "\"-9223372036854775809\""),
            ("userid", "\"1e3\""),
            ("userid", "\"\\u0000\""),
            ("userid", "\"1\\u0000\""),
            ("objectid", "-1e400"),
            ("contextlevel", "-0"),
            ("edulevel", "1e0"),
            ("timecreated", "-1"),
            // serde_json reads `-0` as the float -0.0, not an integer.
            ("timecreated", "-0"),
        ] {
            let body = with_raw(field, raw);
            match decode(Format::Json, body.as_bytes(), 10) {
                // 1e400 is out of range for serde_json: the whole body is malformed.
                Err(IngestError::Malformed(_)) => assert!(raw.contains("e400"), "{raw}"),
                _ => assert_eq!(refused_fields(&body), [field], "{field}: {raw}"),
            }
        }
        for (field, raw) in [
            ("userid", "-9223372036854775808"),
            ("userid", "\"9223372036854775807\""),
            ("objectid", "9223372036854775807"),
            ("relateduserid", "null"),
        ] {
            assert!(
                refused_fields(&with_raw(field, raw)).is_empty(),
                "{field}: {raw}"
            );
        }
    }

    #[test]
    fn strings_nul_surrogates_bom_and_invalid_utf8() {
        // NUL and unicode in free-text fields are data; kept as sent.
        let body = with_raw("component", "\"core\\u0000\u{202e}\u{1F600}\"");
        assert!(refused_fields(&body).is_empty());
        // A lone surrogate is not a Unicode scalar value: serde_json refuses the body.
        for raw in ["\"\\ud800\"", "\"\\udc00x\"", "\"\\ud800\\ud800\""] {
            let body = with_raw("action", raw);
            assert!(
                matches!(
                    decode(Format::Json, body.as_bytes(), 10),
                    Err(IngestError::Malformed(_))
                ),
                "{raw}"
            );
        }
        // A UTF-8 byte order mark is refused with a message, not ignored silently.
        let bom = format!("\u{feff}{}", good());
        assert!(matches!(
            decode(Format::Json, bom.as_bytes(), 10),
            Err(IngestError::Malformed(_))
        ));
        match decode(Format::Ndjson, bom.as_bytes(), 10) {
            Err(IngestError::Malformed(errors)) => assert_eq!(errors[0].index, Some(0)),
            other => panic!("{other:?}"),
        }
        // Invalid UTF-8 and truncated documents.
        let mut invalid = good().to_string().into_bytes();
        invalid.splice(20..20, [0xff, 0xfe, 0xc0]);
        for body in [
            invalid.as_slice(),
            b"{\"eventname\": \"\\core",
            b"[{}, {",
            b"\"",
            b"\xef\xbb\xbf",
            b"\0",
        ] {
            for format in [Format::Json, Format::Ndjson] {
                assert!(
                    matches!(decode(format, body, 10), Err(IngestError::Malformed(_))),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn hostile_event_names_are_refused_naming_eventname() {
        let long = format!("\\\\core\\\\event\\\\{}", "a".repeat(100_000));
        for name in [
            "\\\\core\\\\event\\\\*",
            "\\\\core\\\\event\\\\>",
            "\\\\core\\\\event\\\\a.b",
            "\\\\core\\\\event\\\\..",
            "\\\\*\\\\event\\\\x",
            "\\\\>\\\\event\\\\x",
            "\\\\co.re\\\\event\\\\x",
            "\\\\core\\\\event\\\\a\\\\..\\\\b",
            "\\\\core\\\\event\\\\x\\u0000",
            "*",
            ">",
            "",
            long.as_str(),
        ] {
            let body = with_raw("eventname", &format!("\"{name}\""));
            assert_eq!(refused_fields(&body), ["eventname"], "{name}");
        }
        assert_eq!(
            refused_fields(&with_raw("eventname", "[\"\\\\core\\\\event\\\\x\"]")),
            ["eventname"]
        );
    }

    #[test]
    fn mixed_ndjson_with_blank_lines_counts_items_and_names_lines() {
        let event = good().to_string();
        let body = format!("\n\r\n{event}\r\n   \n\t\n{event}\n\n{{oops\n{event}\n[1]\n\n");
        match decode(Format::Ndjson, body.as_bytes(), 10) {
            Err(IngestError::Malformed(errors)) => {
                assert_eq!(errors.len(), 1);
                assert_eq!(errors[0].index, Some(2));
                assert!(
                    errors[0].message.starts_with("line 8 "),
                    "{}",
                    errors[0].message
                );
            }
            other => panic!("{other:?}"),
        }
        let body = format!("\n{event}\r\n\n  \n{event}");
        let valid = ingest(Format::Ndjson, body.as_bytes()).expect("two valid events");
        assert_eq!(valid.len(), 2);
        // A line holding an array is one item that is not an object.
        let body = format!("{event}\n[{event}]\n");
        assert_eq!(
            ingest(Format::Ndjson, body.as_bytes()),
            Err("invalid".into())
        );
        // Blank lines only: refused as empty, not as zero events accepted.
        assert!(matches!(
            decode(Format::Ndjson, b"\n\r\n \t\n", 10),
            Err(IngestError::Malformed(_))
        ));
    }

    /// Found by `valid_events_round_trip_in_every_shape`: without serde_json's
    /// `float_roundtrip` feature (now on in the workspace) ingest stored
    /// `3.7973571616959523e-73` for `3.797357161695952e-73` and `980038.8974609376` for the
    /// exactly representable `980038.8974609375` sent in `other`.
    #[test]
    fn floats_are_stored_bit_exact() {
        for sent in [3.797_357_161_695_952e-73_f64, 980_038.897_460_937_5] {
            let body = with_raw("other", &format!("[{sent:?}]"));
            let (_, items) = decode(Format::Json, body.as_bytes(), 10).expect("decodes");
            let stored = validate(0, items.into_iter().next().expect("item").value).expect("valid");
            assert_eq!(stored.data["other"][0].as_f64(), Some(sent));
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            // Floats with a short exact decimal form: see `floats_are_stored_bit_exact`.
            (any::<i16>(), 0u32..8)
                .prop_map(|(m, e)| Value::from(f64::from(m) / f64::from(1u32 << e))),
            ".{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("eventname".to_owned()),
                        Just("eventdata".to_owned()),
                        Just("userid".to_owned()),
                        ".{0,8}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An id as Moodle may send it: a number or a numeric string, anywhere in i64.
    fn arb_id() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<i64>().prop_map(|n| Value::from(n.to_string())),
        ]
    }

    prop_compose! {
        fn arb_event()(
            backslash in any::<bool>(),
            component in "[a-z][a-z0-9_]{0,20}",
            class in "[a-z0-9_]{1,30}",
            crud in prop::sample::select(vec!["c", "r", "u", "d"]),
            edulevel in 0i64..=2,
            contextlevel in 1i64..=80,
            anonymous in 0i64..=1,
            timecreated in 0i64..=i64::MAX,
            ids in prop::collection::vec(arb_id(), 4),
            objectid in prop::option::of(arb_id()),
            text in prop::collection::vec(".{0,30}", 3),
            other in arb_json(),
            extra in prop::collection::btree_map("[a-z]{1,10}", arb_json(), 0..3),
        ) -> Value {
            let mut event = json!({
                "eventname": format!("{}{component}\\event\\{class}", if backslash { "\\" } else { "" }),
                "component": text[0], "action": text[1], "target": text[2],
                "objecttable": null, "objectid": objectid, "crud": crud, "edulevel": edulevel,
                "contextid": ids[0], "contextlevel": contextlevel, "contextinstanceid": ids[1],
                "userid": ids[2], "courseid": ids[3], "relateduserid": null,
                "anonymous": anonymous, "other": other, "timecreated": timecreated,
            });
            let map = event.as_object_mut().expect("object");
            for (key, value) in extra {
                map.entry(key).or_insert(value);
            }
            event
        }
    }

    /// What ingest stores for an event sent as `event`: the same, eventname normalised.
    fn normalised(event: &Value) -> Map<String, Value> {
        let mut map = event.as_object().cloned().expect("object");
        let name = map["eventname"].as_str().expect("string");
        let full = if name.starts_with('\\') {
            name.to_owned()
        } else {
            format!("\\{name}")
        };
        map.insert("eventname".into(), Value::String(full));
        map
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = ingest(Format::Json, &body);
            let _ = ingest(Format::Ndjson, &body);
        }

        #[test]
        fn arbitrary_json_never_panics_and_refusals_name_item_and_field(value in arb_json()) {
            let body = value.to_string();
            let _ = ingest(Format::Json, body.as_bytes());
            let wrapped = json!({"ruleid": 1, "eventdata": value, "eventcontextid": 2}).to_string();
            let _ = ingest(Format::Json, wrapped.as_bytes());
        }

        #[test]
        fn ndjson_lines_are_items_and_bad_lines_are_named(
            lines in prop::collection::vec(prop_oneof![
                arb_event().prop_map(|e| e.to_string()),
                Just(String::new()),
                "[ \t\r]{1,3}",
                "[^\n]{1,20}",
            ], 1..12),
        ) {
            let body = lines.join("\n");
            let items: Vec<(usize, &String)> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.bytes().all(|b| b.is_ascii_whitespace()))
                .collect();
            let bad: Vec<(usize, usize)> = items
                .iter()
                .enumerate()
                .filter(|(_, (_, l))| serde_json::from_str::<Value>(l).is_err())
                .map(|(index, (line, _))| (index, *line))
                .collect();
            match decode(Format::Ndjson, body.as_bytes(), 1000) {
                Ok((shape, decoded)) => {
                    prop_assert!(bad.is_empty());
                    prop_assert_eq!(shape, Shape::Batch);
                    prop_assert_eq!(decoded.len(), items.len());
                }
                Err(IngestError::Malformed(errors)) if items.is_empty() => {
                    prop_assert_eq!(errors.len(), 1);
                }
                Err(IngestError::Malformed(errors)) => {
                    let named: Vec<(usize, usize)> = errors
                        .iter()
                        .map(|e| {
                            let line: usize = e.message["line ".len()..]
                                .split(' ')
                                .next()
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0);
                            (e.index.unwrap_or(usize::MAX), line - 1)
                        })
                        .collect();
                    prop_assert_eq!(named, bad);
                }
                Err(other) => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn valid_events_round_trip_in_every_shape(events in prop::collection::vec(arb_event(), 1..5)) {
            let expected: Vec<Map<String, Value>> = events.iter().map(normalised).collect();
            let single = ingest(Format::Json, events[0].to_string().as_bytes());
            prop_assert_eq!(single, Ok(vec![expected[0].clone()]));
            let array = ingest(Format::Json, Value::from(events.clone()).to_string().as_bytes());
            prop_assert_eq!(array, Ok(expected.clone()));
            let ndjson: String = events.iter().map(|e| format!("{e}\r\n")).collect();
            prop_assert_eq!(ingest(Format::Ndjson, ndjson.as_bytes()), Ok(expected.clone()));
            let wrapped: Vec<Value> = events
                .iter()
                .map(|e| json!({"ruleid": 3, "eventdata": e, "eventcontextid": 1}))
                .collect();
            let wrapped = ingest(Format::Json, Value::from(wrapped).to_string().as_bytes());
            prop_assert_eq!(wrapped, Ok(expected));
        }
    }
}
