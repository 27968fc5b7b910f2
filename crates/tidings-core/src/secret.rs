//! Passwords and keys in configuration: never shown by `Debug`.

use std::fmt;

/// A password, access key or other credential in a transport's configuration.
///
/// `Debug` shows `Secret(***)`, so a configuration can be logged whole; the value is read
/// with [`expose`](Secret::expose) where it is sent to the broker, and nowhere else.
///
/// ```
/// use tidings_core::Secret;
/// let key = Secret::new("s3cret");
/// assert_eq!(key.expose(), "s3cret");
/// assert_eq!(format!("{key:?}"), "Secret(***)");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it to the broker.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}
