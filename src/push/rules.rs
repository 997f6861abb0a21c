//! Projection rules: which channels an event goes to. A rule names types (exact or globs)
//! and a channel template of literal text and fields: `{id}` `{type}` `{subject}`
//! `{source}` and `{data.<path>}` (a dotted path into the JSON data; a number or a string
//! is used as text). A field the event lacks means the rule does not apply to it; so does a
//! rendered name that is no valid channel name ([`is_valid_channel`]).

use crate::config::PushConfig;
use crate::model::envelope::Event;
use crate::model::keys::glob_matches;

/// Longest channel name.
pub const MAX_CHANNEL_LEN: usize = 200;

/// Whether `name` is a valid channel name: 1..=200 bytes, no braces (they would break the
/// key's Cluster hash tag), no spaces, control characters or `*` (patterns are reserved for
/// grants).
pub fn is_valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, '{' | '}' | '*'))
}

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Id,
    Type,
    Subject,
    Source,
    Data(Vec<String>),
}

/// A parsed channel template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// A message naming the bad field or character.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{text}` has a `{{` without its `}}`"));
            };
            let field = &rest[open + 1..open + close];
            parts.push(match field {
                "id" => Part::Id,
                "type" => Part::Type,
                "subject" => Part::Subject,
                "source" => Part::Source,
                f => match f.strip_prefix("data.") {
                    Some(path) if !path.is_empty() && path.split('.').all(|p| !p.is_empty()) => {
                        Part::Data(path.split('.').map(str::to_string).collect())
                    }
                    _ => {
                        return Err(format!(
                            "`{{{f}}}` is no field; use {{id}}, {{type}}, {{subject}}, \
                             {{source}} or {{data.<path>}}"
                        ));
                    }
                },
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        for p in &parts {
            if let Part::Text(t) = p
                && !t.is_empty()
                && !is_valid_channel(t)
            {
                return Err(format!(
                    "`{text}`: channel names take no spaces, control characters, `*` or `}}`"
                ));
            }
        }
        if parts.is_empty() {
            return Err("must not be empty; e.g. channel = \"user:{data.userId}\"".into());
        }
        Ok(Template(parts))
    }

    /// The channel of `event`, or `None` when a field is missing (or the name is invalid).
    pub fn render(
        &self,
        event: &Event,
        data: &mut Option<Option<serde_json::Value>>,
    ) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Id => out.push_str(&event.id),
                Part::Type => out.push_str(&event.event_type),
                Part::Subject => out.push_str(event.field("subject").filter(|s| !s.is_empty())?),
                Part::Source => out.push_str(event.field("source").filter(|s| !s.is_empty())?),
                Part::Data(path) => {
                    let json = data
                        .get_or_insert_with(|| event.data_json().ok())
                        .as_ref()?;
                    let value = path.iter().try_fold(json, |v, k| v.get(k))?;
                    match value {
                        serde_json::Value::String(s) if !s.is_empty() => out.push_str(s),
                        serde_json::Value::Number(n) => out.push_str(&n.to_string()),
                        serde_json::Value::Bool(b) => out.push_str(&b.to_string()),
                        _ => return None,
                    }
                }
            }
        }
        is_valid_channel(&out).then_some(out)
    }
}

/// The compiled rules of `[[push.channels]]`.
#[derive(Debug, Clone)]
pub struct Rules(Vec<(Vec<String>, Template)>);

impl Rules {
    /// Compiles the validated rules of `config` (a template that does not parse is skipped;
    /// validation has refused it already).
    pub fn new(config: &PushConfig) -> Rules {
        Rules(
            config
                .channels
                .iter()
                .filter_map(|r| Some((r.types.clone(), Template::parse(&r.channel).ok()?)))
                .collect(),
        )
    }

    /// Every type pattern of every rule (what the projector consumes).
    pub fn patterns(&self) -> Vec<String> {
        let mut all: Vec<String> = self.0.iter().flat_map(|(t, _)| t.clone()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The distinct channels `event` goes to, in rule order, and how many matching rules did
    /// not apply (a field missing or the name invalid).
    pub fn channels(&self, event: &Event) -> (Vec<String>, u64) {
        let mut data = None;
        let (mut out, mut skipped) = (Vec::<String>::new(), 0);
        for (types, template) in &self.0 {
            if !types.iter().any(|p| glob_matches(p, &event.event_type)) {
                continue;
            }
            match template.render(event, &mut data) {
                Some(c) if !out.contains(&c) => out.push(c),
                Some(_) => {}
                None => skipped += 1,
            }
        }
        (out, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str, fields: &[(&str, &str)]) -> Event {
        Event {
            id: "e1".into(),
            event_type: "booking.created".into(),
            data: data.into(),
            attempt: 1,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn templates_render_fields_and_skip_missing_ones() {
        let rules = Rules(vec![
            (
                vec!["booking.*".into()],
                Template::parse("user:{data.user.id}").unwrap(),
            ),
            (
                vec!["booking.*".into()],
                Template::parse("type:{type}").unwrap(),
            ),
            (
                vec!["booking.*".into()],
                Template::parse("s:{subject}").unwrap(),
            ),
            (vec!["other".into()], Template::parse("never").unwrap()),
        ]);
        let e = event(r#"{"user":{"id":42}}"#, &[]);
        assert_eq!(
            rules.channels(&e),
            (
                vec!["user:42".to_string(), "type:booking.created".to_string()],
                1
            )
        );
        let e = event(r#"{"user":{"id":"a b"}}"#, &[("subject", "x")]);
        assert_eq!(
            rules.channels(&e),
            (
                vec!["type:booking.created".to_string(), "s:x".to_string()],
                1
            )
        );
    }

    #[test]
    fn bad_templates_and_names_are_refused() {
        assert!(Template::parse("user:{data.}").is_err());
        assert!(Template::parse("user:{nope}").is_err());
        assert!(Template::parse("user:{id").is_err());
        assert!(Template::parse("a b:{id}").is_err());
        assert!(Template::parse("").is_err());
        assert!(is_valid_channel("user:42"));
        for bad in ["", "a b", "a{b", "a*", "a\n", &"x".repeat(201)] {
            assert!(!is_valid_channel(bad), "{bad:?}");
        }
    }
}
