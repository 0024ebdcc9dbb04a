//! Checking one item against the shape of Moodle's `\core\event\base::get_data()`.
//!
//! Every problem of every item is reported (up to a cap), naming the item and the field. The
//! record is kept as sent, with extra keys; only `eventname` is normalised to its leading
//! backslash.

use serde_json::{Map, Value};

use mih_shared::error::FieldError;
use mih_shared::moodle::EventName;

/// An item that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct ValidEvent {
    pub name: EventName,
    pub data: Map<String, Value>,
}

/// Ids Moodle may send as numbers or as numeric strings (values straight from the database).
const IDS: &[&str] = &["contextid", "contextinstanceid", "userid", "courseid"];
const NULLABLE_IDS: &[&str] = &["objectid", "relateduserid"];
const STRINGS: &[&str] = &["component", "action", "target"];

pub(crate) fn validate(index: usize, value: Value) -> Result<ValidEvent, Vec<FieldError>> {
    let Value::Object(mut data) = value else {
        return Err(vec![FieldError::new(
            Some(index),
            None,
            format!(
                "each event must be a JSON object, not {}",
                type_name(&value)
            ),
        )]);
    };
    let mut errors = Vec::new();
    let mut fail = |field: &str, message: String| {
        errors.push(FieldError::new(Some(index), Some(field), message));
    };

    let name = match data.get("eventname") {
        None | Some(Value::Null) => {
            fail("eventname", "is required".into());
            None
        }
        Some(Value::String(raw)) => match EventName::parse(raw) {
            Ok(name) => Some(name),
            Err(e) => {
                fail("eventname", e.to_string());
                None
            }
        },
        Some(other) => {
            fail(
                "eventname",
                format!("must be a string, not {}", type_name(other)),
            );
            None
        }
    };

    match data.get("crud") {
        Some(Value::String(c)) if matches!(c.as_str(), "c" | "r" | "u" | "d") => {}
        None => fail("crud", "is required".into()),
        Some(other) => fail(
            "crud",
            format!("must be one of \"c\", \"r\", \"u\", \"d\", not {other}"),
        ),
    }
    for field in STRINGS {
        match data.get(*field) {
            Some(Value::String(_)) => {}
            None => fail(field, "is required".into()),
            Some(other) => fail(field, format!("must be a string, not {}", type_name(other))),
        }
    }
    match data.get("objecttable") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(other) => fail(
            "objecttable",
            format!("must be a string or null, not {}", type_name(other)),
        ),
    }
    for field in IDS {
        match data.get(*field) {
            None => fail(field, "is required".into()),
            Some(v) if as_integer(v).is_none() => fail(field, id_message(v)),
            Some(_) => {}
        }
    }
    for field in NULLABLE_IDS {
        match data.get(*field) {
            None | Some(Value::Null) => {}
            Some(v) if as_integer(v).is_none() => fail(field, format!("{} or null", id_message(v))),
            Some(_) => {}
        }
    }
    check_integer(
        &data,
        "edulevel",
        |n| (0..=2).contains(&n),
        "0, 1 or 2",
        &mut fail,
    );
    check_integer(
        &data,
        "contextlevel",
        |n| n > 0,
        "a positive context level (10, 30, 40, 50, 70, 80, …)",
        &mut fail,
    );
    check_integer(
        &data,
        "anonymous",
        |n| n == 0 || n == 1,
        "0 or 1",
        &mut fail,
    );
    check_integer(
        &data,
        "timecreated",
        |n| n >= 0,
        "a Unix time in seconds",
        &mut fail,
    );

    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(name) = name else {
        return Err(vec![FieldError::new(
            Some(index),
            Some("eventname"),
            "is required",
        )]);
    };
    data.insert("eventname".into(), Value::String(name.as_str().to_owned()));
    Ok(ValidEvent { name, data })
}

fn check_integer(
    data: &Map<String, Value>,
    field: &str,
    allowed: impl Fn(i64) -> bool,
    expected: &str,
    fail: &mut impl FnMut(&str, String),
) {
    match data.get(field) {
        None => fail(field, "is required".into()),
        Some(v) => match as_integer(v) {
            Some(n) if allowed(n) => {}
            _ => fail(field, format!("must be {expected}, not {v}")),
        },
    }
}

/// An integer given as a JSON number or a numeric string, within i64 (ids above 2^31 are fine).
pub(crate) fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                None
            } else {
                s.parse().ok()
            }
        }
        _ => None,
    }
}

fn id_message(value: &Value) -> String {
    format!("must be an integer id or a numeric string, not {value}")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn good() -> Value {
        json!({
            "eventname": "\\core\\event\\user_enrolment_created", "component": "core",
            "action": "created", "target": "user_enrolment", "objecttable": "user_enrolments",
            "objectid": 4411, "crud": "c", "edulevel": 0, "contextid": 187, "contextlevel": 50,
            "contextinstanceid": 12, "userid": 14, "courseid": 12, "relateduserid": 27,
            "anonymous": 0, "other": {"enrol": "manual"}, "timecreated": 1772008269
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut event = good();
        event[field] = value;
        event
    }

    fn fields_in_error(value: Value) -> Vec<String> {
        match validate(0, value) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().filter_map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_moodle_event_passes_and_keeps_its_shape() {
        let mut event = good();
        event["origin"] = json!("web");
        event["eventname"] = json!("core\\event\\user_enrolment_created");
        let valid = validate(0, event).expect("valid");
        assert_eq!(
            valid.data["eventname"],
            "\\core\\event\\user_enrolment_created"
        );
        assert_eq!(valid.data["origin"], "web", "extra keys are kept");
        let keys: Vec<_> = valid.data.keys().take(3).cloned().collect();
        assert_eq!(keys, ["eventname", "component", "action"]);
    }

    #[test]
    fn ids_may_be_numeric_strings_and_exceed_32_bits() {
        let event = with("objectid", json!("4294967296"));
        let event = {
            let mut e = event;
            e["userid"] = json!("-1");
            e["courseid"] = json!(9_007_199_254_740_993_i64);
            e
        };
        assert!(validate(0, event).is_ok());
    }

    #[test]
    fn nullable_fields_accept_null_as_moodle_emits_them() {
        let mut event = good();
        for field in ["objecttable", "objectid", "relateduserid", "other"] {
            event[field] = Value::Null;
        }
        assert!(validate(0, event.clone()).is_ok());
        for other in [
            json!([]),
            json!([1, 2]),
            json!("x"),
            json!({"a": {"b": [{}]}}),
        ] {
            event["other"] = other;
            assert!(validate(0, event.clone()).is_ok());
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(fields_in_error(with("crud", json!("p"))), ["crud"]);
        assert_eq!(fields_in_error(with("crud", json!(1))), ["crud"]);
        assert_eq!(fields_in_error(with("userid", json!("12a"))), ["userid"]);
        assert_eq!(fields_in_error(with("userid", json!(1.5))), ["userid"]);
        assert_eq!(fields_in_error(with("objectid", json!(true))), ["objectid"]);
        assert_eq!(fields_in_error(with("edulevel", json!(3))), ["edulevel"]);
        assert_eq!(fields_in_error(with("anonymous", json!(2))), ["anonymous"]);
        assert_eq!(
            fields_in_error(with("timecreated", json!(-5))),
            ["timecreated"]
        );
        assert_eq!(
            fields_in_error(with("eventname", json!("user_created"))),
            ["eventname"]
        );
        assert_eq!(fields_in_error(with("eventname", json!(7))), ["eventname"]);
        assert_eq!(
            fields_in_error(with("objecttable", json!(7))),
            ["objecttable"]
        );
        assert_eq!(fields_in_error(with("courseid", json!(null))), ["courseid"]);
        let mut missing = good();
        missing.as_object_mut().expect("object").remove("eventname");
        missing.as_object_mut().expect("object").remove("contextid");
        assert_eq!(fields_in_error(missing), ["eventname", "contextid"]);
        assert_eq!(
            validate(4, json!([1])).expect_err("not an object")[0].index,
            Some(4)
        );
    }

    #[test]
    fn integers_from_strings_are_strict() {
        assert_eq!(as_integer(&json!("0012")), Some(12));
        for bad in ["", "-", "1e3", " 1", "+1", "99999999999999999999", "0x1"] {
            assert_eq!(as_integer(&json!(bad)), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(value in arb_json()) {
            let _ = validate(0, value);
        }

        #[test]
        fn any_i64_id_is_accepted_as_number_or_string(id in any::<i64>()) {
            prop_assert!(validate(0, with("userid", json!(id))).is_ok());
            prop_assert!(validate(0, with("userid", json!(id.to_string()))).is_ok());
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".*".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("eventname".to_owned()),
                        Just("crud".to_owned()),
                        Just("userid".to_owned()),
                        ".*"
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
