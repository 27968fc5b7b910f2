//! Codecs turn events into payload bytes and back. The bus encodes with the codec it was
//! built with and decodes by each envelope's content type, so a service can read what a
//! service with another codec published.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

#[cfg(feature = "msgpack")]
thread_local! {
    static ENCODE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Media type of MessagePack payloads.
pub const MSGPACK: &str = "application/msgpack";
/// Media type of JSON payloads.
pub const JSON: &str = "application/json";

/// How event payloads are encoded. MessagePack (feature `msgpack`, default) writes structs
/// as maps keyed by field name, so adding an optional field is a compatible change;
/// JSON (feature `json`) is for interoperability and debugging.
///
/// ```
/// use tidings_core::Codec;
/// let codec = Codec::default();
/// assert_eq!(codec.content_type(), "application/msgpack");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// MessagePack via rmp-serde, named fields (`application/msgpack`).
    MessagePack,
    /// JSON via serde_json (`application/json`).
    Json,
}

impl Default for Codec {
    fn default() -> Self {
        if cfg!(feature = "msgpack") || !cfg!(feature = "json") {
            Codec::MessagePack
        } else {
            Codec::Json
        }
    }
}

/// Limits that guard decoding against hostile or broken input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest payload accepted, in bytes.
    pub max_size: usize,
    /// Deepest nesting of arrays and maps accepted.
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_size: 1024 * 1024,
            max_depth: 64,
        }
    }
}

impl DecodeLimits {
    /// These limits, accepting payloads of at least `size` bytes (a claim-checked payload,
    /// bounded by its claim check instead).
    pub(crate) fn at_least(self, size: usize) -> Self {
        DecodeLimits {
            max_size: self.max_size.max(size),
            ..self
        }
    }
}

impl Codec {
    /// The media type written to the envelope's `content-type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::MessagePack => MSGPACK,
            Codec::Json => JSON,
        }
    }

    /// The codec for a content type, if one is compiled in.
    pub fn for_content_type(content_type: &str) -> Option<Codec> {
        // Fast path: what tidings itself writes.
        if content_type == MSGPACK && cfg!(feature = "msgpack") {
            return Some(Codec::MessagePack);
        }
        if content_type == JSON && cfg!(feature = "json") {
            return Some(Codec::Json);
        }
        let essence = content_type.split(';').next().unwrap_or("").trim();
        match essence {
            MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => {
                Some(Codec::MessagePack).filter(|_| cfg!(feature = "msgpack"))
            }
            JSON => Some(Codec::Json).filter(|_| cfg!(feature = "json")),
            _ => None,
        }
    }

    /// Encode a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        match self {
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => ENCODE_BUF.with(|cell| {
                // Encode into a reused buffer, then copy once into an exact-size one: one
                // allocation per event, and `Bytes::from` takes it without another. A
                // re-entrant encode (a Serialize impl that publishes) gets its own buffer.
                let mut fresh = Vec::new();
                let mut reused = cell.try_borrow_mut().ok();
                let buf = reused.as_deref_mut().unwrap_or(&mut fresh);
                buf.clear();
                let result = rmp_serde::encode::write_named(&mut *buf, value)
                    .map(|()| buf.as_slice().to_vec())
                    .map_err(|e| {
                        Error::new(ErrorKind::Encode, "cannot encode event as MessagePack")
                            .with_source(e)
                    });
                if buf.capacity() > 64 * 1024 {
                    // Don't keep a large event's buffer for the thread's lifetime.
                    *buf = Vec::new();
                }
                result
            }),
            #[cfg(feature = "json")]
            Codec::Json => serde_json::to_vec(value).map_err(|e| {
                Error::new(ErrorKind::Encode, "cannot encode event as JSON").with_source(e)
            }),
            #[allow(unreachable_patterns)]
            other => {
                // Without either codec feature nothing reads the value.
                let _ = value;
                Err(not_compiled(other))
            }
        }
    }

    /// Decode a value, enforcing `limits`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8], limits: DecodeLimits) -> Result<T> {
        if bytes.len() > limits.max_size {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "payload of {} bytes is over the limit of {} bytes",
                    bytes.len(),
                    limits.max_size
                ),
            ));
        }
        match self {
            #[cfg(feature = "msgpack")]
            Codec::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                de.set_max_depth(limits.max_depth);
                T::deserialize(&mut de).map_err(|e| {
                    Error::new(
                        ErrorKind::Decode,
                        "payload is not valid MessagePack for this event",
                    )
                    .with_source(e)
                })
            }
            #[cfg(feature = "json")]
            Codec::Json => {
                check_json_depth(bytes, limits.max_depth)?;
                serde_json::from_slice(bytes).map_err(|e| {
                    Error::new(
                        ErrorKind::Decode,
                        "payload is not valid JSON for this event",
                    )
                    .with_source(e)
                })
            }
            #[allow(unreachable_patterns)]
            other => Err(not_compiled(other)),
        }
    }
}

fn not_compiled(codec: Codec) -> Error {
    let feature = match codec {
        Codec::MessagePack => "msgpack",
        Codec::Json => "json",
    };
    Error::new(
        ErrorKind::Config,
        format!(
            "the {codec:?} codec is not compiled in: enable the `{feature}` feature of tidings"
        ),
    )
}

/// serde_json stops at 128 levels; enforce the configured depth by a scan that skips
/// string contents.
///
/// Nesting cannot be deeper than the number of opening brackets, so a payload with no
/// more of them than the limit is let through on a vectorised count (`memchr`); only the
/// rest is scanned byte by byte (for a typical event, the scan was a tenth of the
/// consumer's instructions by callgrind).
#[cfg(feature = "json")]
fn check_json_depth(bytes: &[u8], max_depth: usize) -> Result<()> {
    let opening = memchr::memchr2_iter(b'[', b'{', bytes).count();
    if opening <= max_depth {
        return Ok(());
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        format!("payload nests deeper than the limit of {max_depth} levels"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Nested {
        inner: Option<Box<Nested>>,
    }

    fn nested(depth: usize) -> Nested {
        (0..depth).fold(Nested { inner: None }, |n, _| Nested {
            inner: Some(Box::new(n)),
        })
    }

    #[test]
    fn msgpack_round_trip_and_depth_guard() {
        let codec = Codec::MessagePack;
        let bytes = codec.encode(&nested(10)).unwrap();
        let back: Nested = codec.decode(&bytes, DecodeLimits::default()).unwrap();
        assert_eq!(back, nested(10));
        let deep = codec.encode(&nested(200)).unwrap();
        let err = codec
            .decode::<Nested>(&deep, DecodeLimits::default())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
    }

    #[test]
    fn oversized_is_refused_before_decoding() {
        let limits = DecodeLimits {
            max_size: 4,
            max_depth: 8,
        };
        let err = Codec::MessagePack
            .decode::<u32>(&[0; 5], limits)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_depth_guard_ignores_brackets_in_strings() {
        let limits = DecodeLimits {
            max_size: 1 << 20,
            max_depth: 3,
        };
        let ok: serde_json::Value = Codec::Json.decode(br#"{"a":"[[[[[[["}"#, limits).unwrap();
        assert_eq!(ok["a"], "[[[[[[[");
        // More brackets than the limit, but side by side: two levels deep.
        let wide: serde_json::Value = Codec::Json.decode(b"[[1],[2],[3],{}]", limits).unwrap();
        assert_eq!(wide[3], serde_json::json!({}));
        let err = Codec::Json
            .decode::<serde_json::Value>(b"[[[[1]]]]", limits)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Decode);
    }

    #[test]
    fn content_type_lookup() {
        assert_eq!(
            Codec::for_content_type("application/msgpack"),
            Some(Codec::MessagePack)
        );
        assert_eq!(Codec::for_content_type("text/plain"), None);
    }
}
