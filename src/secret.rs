//! Secrets: values that must never reach a log line, an error message or a diff.
//!
//! Two layers keep that promise:
//! - [`Secret`] wraps a value so that `Debug` and `Display` print a mask; code that needs the
//!   value asks for it explicitly with [`Secret::expose`].
//! - [`Registry`] remembers every secret value seen since start-up so that text built from
//!   other sources (a child's stderr, a promtool message, a diff, a formatted error) can be
//!   masked with [`Registry::mask`]. The log writer installed by `main` passes every line
//!   through the global registry, so even a value that slipped into a log event is masked.
//!
//! The registry is process-global on purpose: logging is process-global, and a secret learned
//! anywhere must be masked everywhere.

use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

/// What a masked value looks like in logs, errors and diffs.
pub const MASK: &str = "********";

/// Values shorter than this are not registered for masking: masking every "1" or "true" in
/// logs would destroy them and protect nothing.
const MIN_MASKED_LEN: usize = 4;

/// A string whose `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps `value` and registers it with the global registry so stray copies are masked too.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        let value = value.into();
        let registry = global();
        registry.register(&value);
        // The forms a template filter or a serializer may turn it into, so the copy in a
        // rendered file is recognised (and the file kept private) even when escaped.
        for escaped in escaped_forms(&value) {
            registry.register(&escaped);
        }
        Secret(value)
    }

    /// Whether `text` holds this secret, as is or in an escaped form a template may write.
    pub fn appears_in(&self, text: &str) -> bool {
        text.contains(&*self.0)
            || escaped_forms(&self.0)
                .iter()
                .any(|f| text.contains(f.as_str()))
    }

    /// The value itself, for the one place that needs it (a rendered file, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// `value` as JSON/YAML double-quoted strings and YAML single-quoted strings write it, when
/// that differs from the value itself.
fn escaped_forms(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(json) = serde_json::to_string(value) {
        let inner = &json[1..json.len() - 1];
        if inner != value {
            out.push(inner.to_owned());
        }
    }
    if value.contains('\'') {
        out.push(value.replace('\'', "''"));
    }
    out
}

/// The set of secret values known to this process.
#[derive(Default)]
pub struct Registry {
    values: RwLock<Vec<Arc<str>>>,
}

impl Registry {
    /// Remembers `value`; longer values are masked first so that a secret containing another
    /// one is masked whole.
    pub fn register(&self, value: &str) {
        if value.len() < MIN_MASKED_LEN {
            return;
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        if values.iter().any(|v| &**v == value) {
            return;
        }
        values.push(Arc::from(value));
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// `text` with every registered value replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        let values = self.values.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_owned();
        for value in values.iter() {
            if out.contains(&**value) {
                out = out.replace(&**value, MASK);
            }
        }
        out
    }
}

/// The process-wide registry used by logging and error reporting.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

/// Shorthand for `global().mask(text)`.
pub fn mask(text: &str) -> String {
    global().mask(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(format!("{s}"), MASK);
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn registry_masks_longest_value_first() {
        let r = Registry::default();
        r.register("abcd");
        r.register("abcdefgh");
        assert_eq!(r.mask("x abcdefgh y abcd"), format!("x {MASK} y {MASK}"));
    }

    #[test]
    fn a_secret_is_recognised_in_its_escaped_forms() {
        let s = Secret::new("it's \"quoted\"");
        assert!(s.appears_in("x: 'it''s \"quoted\"'"));
        assert!(s.appears_in(&serde_json::to_string(s.expose()).unwrap()));
        assert!(!s.appears_in("unrelated"));
    }

    #[test]
    fn escaped_copies_of_a_secret_are_masked_too() {
        let s = Secret::new("pa\"ss\\word'1");
        let json = serde_json::to_string(s.expose()).unwrap();
        assert!(
            !mask(&format!("x: {json}")).contains("ss"),
            "{}",
            mask(&json)
        );
        assert_eq!(mask("x: 'pa\"ss\\word''1'"), format!("x: '{MASK}'"));
    }

    #[test]
    fn short_values_are_not_masked() {
        let r = Registry::default();
        r.register("1");
        assert_eq!(r.mask("1 2 3"), "1 2 3");
    }
}
