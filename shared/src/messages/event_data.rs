//! The Moodle event inside an [`super::Event`], kept as the JSON text it was read as until
//! something reads its fields.
//!
//! The matcher reads every event, and most rules never look inside it: a rule matches by the
//! event's name and, without a template, forwards the event as it came. Reading the event into
//! a map of values and writing that map back into the job was a sixth of the matcher's CPU at
//! saturation. So an event read from a message keeps its text; its fields are read from it once,
//! on first use (a condition, a template, a partition key); the name is found by skipping over
//! the rest; and the event forwarded as it came is that text. Its bytes are the ones a map would
//! write: ingest wrote them from a map, and serde_json writes a map it read back the same way.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A Moodle event's fields, read on first use when they came as text. Dereferences to the map.
#[derive(Clone, Default)]
pub struct EventData {
    /// The text it was read as, which stays what it is written as.
    text: Option<Box<RawValue>>,
    fields: OnceLock<Map<String, Value>>,
    /// `eventname`, asked for several times per event (the matcher's rule lookup, then each
    /// rule), looked up once.
    eventname: OnceLock<Option<String>>,
}

impl EventData {
    /// The event as JSON text: the text it was read as, or its fields written out.
    pub fn json(&self) -> Cow<'_, str> {
        match &self.text {
            Some(text) => Cow::Borrowed(text.get()),
            // A map of JSON values always writes.
            None => Cow::Owned(serde_json::to_string(self.fields()).unwrap_or_default()),
        }
    }

    /// The `eventname` field, when it is a string.
    pub fn eventname(&self) -> Option<&str> {
        self.eventname
            .get_or_init(|| self.str_field("eventname").map(Cow::into_owned))
            .as_deref()
    }

    /// A top-level field that is a string, without reading the other fields into values when
    /// they have not been read yet.
    fn str_field(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(fields) = self.fields.get() {
            return fields.get(name)?.as_str().map(Cow::Borrowed);
        }
        let text = self.text.as_ref()?;
        let mut reader = serde_json::Deserializer::from_str(text.get());
        reader
            .deserialize_map(StrField { name })
            .ok()
            .flatten()
            .map(Cow::Owned)
    }

    fn fields(&self) -> &Map<String, Value> {
        self.fields.get_or_init(|| {
            // The text was checked to be an object when it was read, so this cannot fail.
            self.text
                .as_ref()
                .and_then(|text| serde_json::from_str(text.get()).ok())
                .unwrap_or_default()
        })
    }
}

impl From<Map<String, Value>> for EventData {
    fn from(fields: Map<String, Value>) -> Self {
        EventData {
            text: None,
            fields: OnceLock::from(fields),
            eventname: OnceLock::new(),
        }
    }
}

impl From<EventData> for Map<String, Value> {
    fn from(mut data: EventData) -> Self {
        data.fields();
        data.fields.take().unwrap_or_default()
    }
}

impl Deref for EventData {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        self.fields()
    }
}

impl DerefMut for EventData {
    /// A change makes the fields what is written: the text it was read as is let go.
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.fields();
        self.text = None;
        self.eventname = OnceLock::new();
        self.fields
            .get_mut()
            .expect("initialised by the line above")
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        match (&self.text, &other.text) {
            (Some(a), Some(b)) if a.get() == b.get() => true,
            _ => self.fields() == other.fields(),
        }
    }
}

impl fmt::Debug for EventData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.text, self.fields.get()) {
            (_, Some(fields)) => fields.fmt(f),
            (Some(text), None) => f.write_str(text.get()),
            (None, None) => f.write_str("{}"),
        }
    }
}

impl Serialize for EventData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(text) => text.serialize(serializer),
            None => self.fields().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Box::<RawValue>::deserialize(deserializer)?;
        if !text.get().trim_start().starts_with('{') {
            return Err(de::Error::invalid_type(
                de::Unexpected::Other(text.get().chars().take(16).collect::<String>().as_str()),
                &"the Moodle event as a JSON object",
            ));
        }
        Ok(EventData {
            text: Some(text),
            fields: OnceLock::new(),
            eventname: OnceLock::new(),
        })
    }
}

/// Reads one top-level string field of an object, skipping the others without building them.
struct StrField<'n> {
    name: &'n str,
}

impl<'de> Visitor<'de> for StrField<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        // A repeated key: the last one counts, as in the map the fields are read into.
        while let Some(is_it) = map.next_key_seed(KeyIs(self.name))? {
            if is_it {
                found = map.next_value::<Value>()?.as_str().map(str::to_owned);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A key, compared with the one looked for without being copied when it has no escapes.
struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MOODLE: &str = r#"{"eventname":"\\core\\event\\course_viewed","component":"core","courseid":"12","other":{"n":1.5,"s":"é \" \\"},"eventname2":null}"#;

    #[test]
    fn text_read_is_written_back_unchanged_and_as_a_map_would_write_it() {
        let data: EventData = serde_json::from_str(MOODLE).expect("object");
        assert_eq!(serde_json::to_string(&data).expect("json"), MOODLE);
        assert_eq!(data.json(), MOODLE);
        let map: Map<String, Value> = serde_json::from_str(MOODLE).expect("map");
        assert_eq!(serde_json::to_string(&map).expect("json"), MOODLE);
        assert_eq!(EventData::from(map.clone()).json(), MOODLE);
        assert_eq!(data, EventData::from(map));
    }

    #[test]
    fn a_string_field_is_found_without_reading_the_others() {
        let data: EventData = serde_json::from_str(MOODLE).expect("object");
        assert_eq!(
            data.str_field("eventname").as_deref(),
            Some("\\core\\event\\course_viewed")
        );
        assert_eq!(data.str_field("courseid").as_deref(), Some("12"));
        assert_eq!(data.str_field("other"), None, "not a string");
        assert_eq!(data.str_field("missing"), None);
        assert!(data.fields.get().is_none(), "nothing else was read");
        assert_eq!(data["other"]["s"], "é \" \\");
        assert_eq!(
            data.str_field("eventname").as_deref(),
            Some("\\core\\event\\course_viewed")
        );

        let repeated: EventData =
            serde_json::from_str(r#"{"a":"1","b":2,"a":"2"}"#).expect("object");
        assert_eq!(
            repeated.str_field("a").as_deref(),
            Some("2"),
            "as the map has it"
        );
        assert_eq!(repeated["a"], "2");
    }

    #[test]
    fn every_fixture_event_is_forwarded_as_its_map_would_write_it() {
        for event in mih_testkit::fixtures::moodle_events() {
            let Value::Object(map) = event else {
                panic!("a fixture event is an object")
            };
            // What ingest stores, and what the matcher wrote from the map it read it into.
            let stored = serde_json::to_string(&EventData::from(map)).expect("json");
            let reread: Map<String, Value> = serde_json::from_str(&stored).expect("map");
            let data: EventData = serde_json::from_str(&stored).expect("object");
            assert_eq!(data.json(), serde_json::to_string(&reread).expect("json"));
            assert_eq!(
                data.str_field("eventname").as_deref(),
                reread["eventname"].as_str()
            );
        }
    }

    #[test]
    fn a_change_is_what_gets_written() {
        let mut data: EventData = serde_json::from_str(MOODLE).expect("object");
        assert_eq!(data.eventname(), Some("\\core\\event\\course_viewed"));
        data.insert("eventname".into(), json!("\\core\\event\\user_created"));
        assert_eq!(data.eventname(), Some("\\core\\event\\user_created"));
        data.insert("courseid".into(), json!(13));
        let written: Value = serde_json::from_str(&data.json()).expect("json");
        assert_eq!(written["courseid"], 13);
        assert_eq!(written["component"], "core");
    }

    #[test]
    fn only_an_object_is_an_event() {
        for not_an_object in ["[1]", "\"x\"", "null", "3"] {
            let error = serde_json::from_str::<EventData>(not_an_object)
                .expect_err(not_an_object)
                .to_string();
            assert!(
                error.contains("the Moodle event as a JSON object"),
                "{error}"
            );
        }
        let from_value: EventData =
            serde_json::from_value(json!({"eventname": "\\core\\event\\x"})).expect("value");
        assert_eq!(
            from_value.str_field("eventname").as_deref(),
            Some("\\core\\event\\x")
        );
    }
}
