//! What a refused configuration says: every problem found at once, each naming where the value
//! came from (the file, or the `ARCHIPEL_` variable that set it), the key, and the fix.

use std::fmt;
use std::path::PathBuf;

use super::env;

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file is not there (or is not a file).
    #[error("  - {}", not_found(path))]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The file was read, and these values cannot work.
    #[error("{}", List(problems))]
    Invalid {
        /// Every problem found, in file order as far as possible.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem, one per line of the message.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::NotFound { path } => vec![not_found(path)],
            ConfigError::Invalid { problems } => problems.iter().map(Problem::to_string).collect(),
        }
    }
}

fn not_found(path: &std::path::Path) -> String {
    format!(
        "config file {} not found: give the path of a TOML file (deploy/gateway.toml is an example)",
        path.display()
    )
}

/// One value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the value was written, when it is not the config file itself: an environment
    /// variable, or the file's name for problems found while parsing it.
    pub origin: Option<String>,
    /// The key at fault, as the operator finds it (`store.path`, `radio[0] (north).tcp`).
    pub key: String,
    /// What is wrong with it, and what to write instead.
    pub message: String,
}

impl Problem {
    /// A problem with `key` in the config file.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            origin: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Bulleted problems, one a line.
struct List<'a>(&'a [Problem]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Rewords figment's errors so each names its source, the key, the value and what is expected.
pub fn from_figment(e: figment::Error, file: &str) -> Vec<Problem> {
    e.into_iter()
        .map(|err| {
            let key = if err.path.is_empty() {
                String::from("(top level)")
            } else {
                err.path.join(".")
            };
            let origin = err
                .metadata
                .as_ref()
                .and_then(env::variable)
                .map(|var| format!("{var} (environment)"))
                .unwrap_or_else(|| file.to_owned());
            let message = match &err.kind {
                figment::error::Kind::MissingField(f) => {
                    format!("missing `{f}`: add it (see deploy/gateway.toml)")
                }
                figment::error::Kind::UnknownField(f, _)
                    if ["password", "secret"].contains(&f.as_str()) =>
                {
                    format!(
                        "a {f} does not go in the config, which gets shown and shared: put it alone in a file readable only by the gateway's user and set `{f}_file` to its path"
                    )
                }
                figment::error::Kind::UnknownField(f, expected) => format!(
                    "unknown key `{f}`: check the spelling; expected one of {}",
                    expected.join(", ")
                ),
                other => other.to_string(),
            };
            Problem {
                origin: Some(origin),
                key,
                message,
            }
        })
        .collect()
}
