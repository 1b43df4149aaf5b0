//! The two guards that run before or while YAML becomes values: a lexical scan for deep flow
//! nesting, and a budget on the values a file may expand to.

use super::MAX_VALUES;
use serde::de::{self, DeserializeSeed, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value, mapping::Entry};
use std::cell::Cell;
use std::fmt;

/// True when `[`/`{` nest deeper than `max`. A lexical over-estimate: it skips comments and
/// quoted scalars, and counts a bracket outside a flow collection only where a value can
/// start, so brackets inside plain text (`a[0]`) do not count.
pub(super) fn flow_depth_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        // Outside a flow collection only whitespace precedes a value: `a:[1]` is one plain scalar.
        let value_start = |p: char| p.is_whitespace() || depth > 0 && "[{,:".contains(p);
        match c {
            '#' if previous.is_whitespace() => {
                chars.by_ref().take_while(|&c| c != '\n').for_each(drop);
                previous = '\n';
                continue;
            }
            '"' if value_start(previous) => {
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => drop(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' if value_start(previous) => {
                while let Some(q) = chars.next() {
                    if q == '\'' && chars.next_if_eq(&'\'').is_none() {
                        break;
                    }
                }
            }
            '[' | '{' if depth > 0 || value_start(previous) => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    false
}

/// Builds a [`Value`] while counting every value made, aliases included: serde_yaml limits
/// how often aliases are followed, not how much they expand to, so one anchor of a thousand
/// items named a thousand times would otherwise become a million values.
pub(super) struct Budgeted<'a>(pub(super) &'a Cell<usize>);

impl Budgeted<'_> {
    fn spend<E: de::Error>(&self) -> Result<(), E> {
        match self.0.get().checked_sub(1) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "the file expands to more than {MAX_VALUES} values (through aliases?)"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budgeted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Budgeted(self.0))? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.spend()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(Budgeted(self.0))? {
            match mapping.entry(key) {
                Entry::Occupied(entry) => {
                    let message = match entry.key() {
                        Value::String(key) => format!("duplicate entry with key {key:?}"),
                        _ => "duplicate entry in YAML map".to_owned(),
                    };
                    return Err(de::Error::custom(message));
                }
                Entry::Vacant(entry) => drop(entry.insert(map.next_value_seed(Budgeted(self.0))?)),
            }
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        self.spend()?;
        let (tag, contents) = data.variant::<String>()?;
        let value = de::VariantAccess::newtype_variant_seed(contents, Budgeted(self.0))?;
        let tag = Tag::new(tag);
        Ok(Value::Tagged(Box::new(TaggedValue { tag, value })))
    }
}
