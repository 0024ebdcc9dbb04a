//! Turning a request body into a list of JSON events: one object, a JSON array, or NDJSON;
//! each item either a Moodle event or MIH's queued-task wrapper `{ruleid, eventdata, …}`.

use serde_json::{Map, Value};

use crate::error::IngestError;
use mih_shared::error::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
}

/// Reads the body format from `Content-Type`; a missing header means JSON.
pub fn format_of(content_type: Option<&str>) -> Result<Format, IngestError> {
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
pub struct Item {
    pub index: usize,
    pub value: Value,
}

/// Whether the request body held a single event or a batch (array or NDJSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single,
    Batch,
}

/// Splits the body into items, refusing malformed JSON and batches over `max_events`.
pub fn decode(
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
        .map(|(index, value)| Item {
            index,
            value: unwrap_queued_task(value),
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
