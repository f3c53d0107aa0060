//! `ARCHIPEL_` environment overrides: `ARCHIPEL_STORE__PATH=/data/a.sqlite` sets `store.path`.
//!
//! Each variable is its own figment provider, so figment's metadata for a value names the
//! variable that set it, and every error about that value (a wrong type now, a bound in
//! `validate` later) names the variable instead of the file. The variables are taken as a
//! list rather than read by figment's `Env`, so tests hand their own list and never touch the
//! process environment that parallel tests share.

use std::ffi::OsString;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider, Source};

use super::error::Problem;

/// Every config variable starts with this.
pub const PREFIX: &str = "ARCHIPEL_";

/// Sections whose keys the environment may set: single values, unlike the `[[radio]]` lists.
const SECTIONS: &[&str] = &["gateway", "store", "airtime", "federation", "http", "log"];

/// The list sections, which an index in a variable name cannot address.
const LISTS: &[&str] = &["radio", "mqtt", "xmpp", "peer", "channel", "route"];

/// How the metadata of an override starts, to tell it from the file's.
const METADATA_NAME: &str = "environment variable";

/// One `ARCHIPEL_` variable that sets a config key.
#[derive(Debug, Clone)]
pub struct Override {
    /// The variable, as the operator wrote it (`ARCHIPEL_STORE__PATH`).
    pub name: String,
    /// The key it sets (`store.path`).
    pub path: String,
    /// Its value.
    pub value: String,
    /// Read the value as text even when it looks like a number or a boolean: set after the
    /// key turned out to want text (`ARCHIPEL_GATEWAY__NAME=2024`).
    pub as_text: bool,
}

impl Provider for Override {
    fn metadata(&self) -> Metadata {
        let name = self.name.clone();
        Metadata::named(format!("{METADATA_NAME} {}", self.name))
            .source(Source::Custom(self.name.clone()))
            .interpolater(move |_: &Profile, _: &[&str]| name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let value = if self.as_text {
            Value::from(self.value.clone())
        } else {
            // Figment's own lenient reading: numbers, booleans, arrays, else text.
            self.value
                .parse::<Value>()
                .unwrap_or_else(|_| Value::from(self.value.clone()))
        };
        figment::providers::Serialized::default(&self.path, value).data()
    }
}

/// The variable that set a value, when its metadata says it came from one.
pub fn variable(metadata: &Metadata) -> Option<String> {
    match &metadata.source {
        Some(Source::Custom(name)) if metadata.name.starts_with(METADATA_NAME) => {
            Some(name.clone())
        }
        _ => None,
    }
}

/// Sorts environment variables into overrides and problems. Variables without `__` after the
/// prefix are not config keys (`ARCHIPEL_LOG`, `ARCHIPEL_CRASH_AT`) and are left alone.
pub fn overrides(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> (Vec<Override>, Vec<Problem>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in vars {
        let lossy = name.to_string_lossy();
        let Some(rest) = lossy.strip_prefix(PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let var = lossy.to_string();
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let path = segments.join(".");
        let problem = |message: String| Problem {
            origin: Some(format!("{var} (environment)")),
            key: path.clone(),
            message,
        };
        if name.to_str().is_none() || segments.iter().any(String::is_empty) {
            problems.push(problem(
                "is not a config key: write ARCHIPEL_ then the key's levels joined by `__`, such as ARCHIPEL_STORE__PATH".into(),
            ));
            continue;
        }
        let section = segments[0].as_str();
        if LISTS.contains(&section) {
            problems.push(problem(format!(
                "[[{section}]] sections are a list, which the environment cannot address: set it in the file"
            )));
            continue;
        }
        if !SECTIONS.contains(&section) {
            problems.push(problem(format!(
                "there is no section `{section}` to override: the environment sets keys of {}, such as ARCHIPEL_STORE__PATH",
                SECTIONS.join(", ")
            )));
            continue;
        }
        let Some(value) = value.to_str() else {
            problems.push(problem("its value is not valid UTF-8".into()));
            continue;
        };
        found.push(Override {
            name: var.clone(),
            path: path.clone(),
            value: value.to_owned(),
            as_text: false,
        });
    }
    (found, problems)
}

/// After a failed extraction: marks as text every override that figment read as a number or
/// a boolean where the key wants text, and says whether one was marked (then extraction is
/// worth a second try).
pub fn retry_as_text(overrides: &mut [Override], e: &figment::Error) -> bool {
    let mut changed = false;
    for err in e.clone() {
        let figment::error::Kind::InvalidType(actual, expected) = &err.kind else {
            continue;
        };
        if matches!(actual, figment::error::Actual::Str(_)) || !expected.contains("string") {
            continue;
        }
        let Some(var) = err.metadata.as_ref().and_then(variable) else {
            continue;
        };
        for o in overrides.iter_mut().filter(|o| o.name == var && !o.as_text) {
            o.as_text = true;
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn only_double_underscore_variables_of_known_sections_are_config() {
        let (found, problems) = overrides(vars(&[
            ("ARCHIPEL_LOG", "debug"),
            ("ARCHIPEL_CRASH_AT", "x:1"),
            ("HOME", "/root"),
            ("ARCHIPEL_STORE__TTL__DIRECT_MINUTES", "60"),
        ]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].name.as_str(), found[0].path.as_str()),
            (
                "ARCHIPEL_STORE__TTL__DIRECT_MINUTES",
                "store.ttl.direct_minutes"
            )
        );
    }

    #[test]
    fn list_sections_and_unknown_sections_are_refused_by_name() {
        let (found, problems) = overrides(vars(&[
            ("ARCHIPEL_RADIO__0__TCP", "x:1"),
            ("ARCHIPEL_STROE__PATH", "a"),
            ("ARCHIPEL_STORE____PATH", "a"),
        ]));
        assert!(found.is_empty());
        let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
        assert!(
            text[0].starts_with("ARCHIPEL_RADIO__0__TCP") && text[0].contains("in the file"),
            "{text:?}"
        );
        assert!(text[1].contains("no section `stroe`"), "{text:?}");
        assert!(text[2].contains("not a config key"), "{text:?}");
    }
}
