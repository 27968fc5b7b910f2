//! `transport_url`: pick a compiled-in transport from configuration.

use std::sync::Arc;

use tidings_core::{BusBuilder, DynTransport, Error, ErrorKind, Result};

/// Connect the transport named by `url`'s scheme, among those compiled in:
/// `memory://[hub]` (feature `memory`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidings::Result<()> {
/// let transport = tidings::connect("memory://").await?;
/// assert!(tidings::connect("carrier-pigeon://coop").await.is_err());
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn DynTransport>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        #[cfg(feature = "memory")]
        "memory" => Ok(Arc::new(crate::Memory::from_url(url)?)),
        _ => Err(Error::new(
            ErrorKind::Config,
            format!(
                "no transport for {:?}: the schemes compiled in are {}; enable the cargo feature of the transport you want",
                redact(url),
                compiled_schemes()
            ),
        )),
    }
}

fn compiled_schemes() -> &'static str {
    if cfg!(feature = "memory") {
        "memory://"
    } else {
        "none"
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            let userinfo = &url[start + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &url[..start], &url[at + 1..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Adds `transport_url` to [`BusBuilder`]: the transport is chosen by the URL's scheme at
/// `build()`, so configuration rather than code picks the backend.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tidings::Result<()> {
/// use tidings::prelude::*;
/// let bus = Bus::builder("lending").transport_url("memory://").build().await?;
/// # Ok(()) }
/// ```
pub trait TransportUrl {
    /// Connect the transport named by `url` during `build()`.
    fn transport_url(self, url: impl Into<String>) -> Self;
}

impl TransportUrl for BusBuilder {
    fn transport_url(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.transport_from(async move { connect(&url).await })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            super::redact("amqp://guest:s3cret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(super::redact("memory://"), "memory://");
    }
}
