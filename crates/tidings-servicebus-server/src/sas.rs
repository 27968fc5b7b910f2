//! Shared Access Signature tokens: the string to sign is the URL-encoded resource URI, a
//! newline, and the expiry in seconds since the Unix epoch; the signature is the base64 of
//! HMAC-SHA256 over it, keyed with the policy key's UTF-8 bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a shared access policy may do (the `Manage`, `Send` and `Listen` claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    /// Create, read and delete entities (the management Atom API). Implies send and listen.
    pub manage: bool,
    /// Send messages.
    pub send: bool,
    /// Receive and settle messages.
    pub listen: bool,
}

impl Rights {
    /// Manage, send and listen: what `RootManageSharedAccessKey` has.
    pub const ALL: Rights = Rights {
        manage: true,
        send: true,
        listen: true,
    };
    /// Send and listen, no management.
    pub const SEND_LISTEN: Rights = Rights {
        manage: false,
        send: true,
        listen: true,
    };

    pub(crate) fn name(claim: Claim) -> &'static str {
        match claim {
            Claim::Manage => "Manage",
            Claim::Send => "Send",
            Claim::Listen => "Listen",
        }
    }

    pub(crate) fn allows(&self, claim: Claim) -> bool {
        self.manage
            || match claim {
                Claim::Manage => false,
                Claim::Send => self.send,
                Claim::Listen => self.listen,
            }
    }
}

/// The claim an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    Manage,
    Send,
    Listen,
}

/// A shared access policy: a key name, its key and its rights.
#[derive(Clone)]
pub struct SasPolicy {
    /// The policy (key) name, `skn` in tokens.
    pub key_name: String,
    key: String,
    /// What the policy may do.
    pub rights: Rights,
}

impl SasPolicy {
    /// A policy named `key_name` with `key` and `rights`.
    pub fn new(key_name: impl Into<String>, key: impl Into<String>, rights: Rights) -> Self {
        SasPolicy {
            key_name: key_name.into(),
            key: key.into(),
            rights,
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasPolicy")
            .field("key_name", &self.key_name)
            .field("key", &"<redacted>")
            .field("rights", &self.rights)
            .finish()
    }
}

/// The base64 HMAC-SHA256 signature of `string_to_sign` with `key`.
pub fn sign(key: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A `SharedAccessSignature ...` header value for `resource_uri` (for example
/// `https://dev.servicebus.windows.net/`), valid for `ttl`; handy with curl against the
/// development server.
pub fn token(resource_uri: &str, key_name: &str, key: &str, ttl: Duration) -> String {
    let expiry = (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    token_with_expiry(resource_uri, key_name, key, expiry)
}

/// Like [`token`] with an explicit expiry in seconds since the Unix epoch.
pub fn token_with_expiry(resource_uri: &str, key_name: &str, key: &str, expiry: u64) -> String {
    let sr: String = form_urlencoded::byte_serialize(resource_uri.as_bytes()).collect();
    let sig = sign(key, &format!("{sr}\n{expiry}"));
    let sig: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    let skn: String = form_urlencoded::byte_serialize(key_name.as_bytes()).collect();
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={skn}")
}

/// Why a token was refused; the message goes into the 401 body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) String);

/// Check the `Authorization` header for a request to `resource` (`{ns}.servicebus.windows.net/path?query`,
/// lowercase, without scheme) needing `claim`.
pub(crate) fn authorize(
    header: Option<&str>,
    resource: &str,
    claim: Claim,
    policies: &[SasPolicy],
) -> Result<(), Refusal> {
    let header = header
        .ok_or_else(|| Refusal("MissingToken: the Authorization header is missing".into()))?;
    let rest = header
        .trim()
        .strip_prefix("SharedAccessSignature ")
        .ok_or_else(|| {
            Refusal("InvalidToken: only SharedAccessSignature tokens are accepted".into())
        })?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for pair in rest.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sr" => sr = Some(v),
            "sig" => sig = Some(v),
            "se" => se = Some(v),
            "skn" => skn = Some(v),
            _ => {}
        }
    }
    let (Some(sr_raw), Some(sig), Some(se), Some(skn)) = (sr, sig, se, skn) else {
        return Err(Refusal(
            "InvalidToken: the token needs sr, sig, se and skn".into(),
        ));
    };
    let decode = |v: &str| -> String {
        form_urlencoded::parse(format!("x={v}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let skn = decode(skn);
    let policy = policies.iter().find(|p| p.key_name == skn).ok_or_else(|| {
        Refusal(format!(
            "InvalidSignature: no shared access policy named {skn:?}"
        ))
    })?;
    let expiry: u64 = se
        .parse()
        .map_err(|_| Refusal(format!("InvalidToken: se {se:?} is not a number")))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if expiry <= now {
        return Err(Refusal(format!(
            "ExpiredToken: the token expired at {expiry} (now {now})"
        )));
    }
    let expected = sign(policy.key(), &format!("{sr_raw}\n{se}"));
    if !constant_time_eq(expected.as_bytes(), decode(sig).as_bytes()) {
        return Err(Refusal(
            "InvalidSignature: the token signature does not match".into(),
        ));
    }
    let scope = normalize_resource(&decode(sr_raw));
    if !covers(&scope, resource) {
        return Err(Refusal(format!(
            "InvalidAudience: the token is for {scope:?}, not for {resource:?}"
        )));
    }
    if !policy.rights.allows(claim) {
        return Err(Refusal(format!(
            "Unauthorized: the policy {:?} lacks the {} claim this operation requires",
            policy.key_name,
            Rights::name(claim)
        )));
    }
    Ok(())
}

/// Lowercase, no scheme, no trailing slash.
pub(crate) fn normalize_resource(uri: &str) -> String {
    let lower = uri.trim().to_ascii_lowercase();
    let no_scheme = lower.split_once("://").map(|(_, r)| r).unwrap_or(&lower);
    no_scheme.trim_end_matches('/').to_string()
}

/// Whether a token for `scope` covers `resource`: a prefix ending at a path boundary.
fn covers(scope: &str, resource: &str) -> bool {
    match resource.strip_prefix(scope) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Vec<SasPolicy> {
        vec![
            SasPolicy::new("root", "k3y", Rights::ALL),
            SasPolicy::new("app", "other", Rights::SEND_LISTEN),
        ]
    }

    #[test]
    fn a_token_made_here_is_accepted_for_its_resource_and_children() {
        let t = token(
            "https://dev.servicebus.windows.net/",
            "root",
            "k3y",
            Duration::from_secs(60),
        );
        let r = authorize(
            Some(&t),
            "dev.servicebus.windows.net/lending/messages",
            Claim::Send,
            &policies(),
        );
        assert_eq!(r, Ok(()));
        let t = token(
            "https://dev.servicebus.windows.net/lending",
            "root",
            "k3y",
            Duration::from_secs(60),
        );
        assert!(authorize(
            Some(&t),
            "dev.servicebus.windows.net/lending2/messages",
            Claim::Send,
            &policies()
        )
        .is_err());
    }

    #[test]
    fn bad_key_expired_token_and_missing_claim_are_refused() {
        let res = "dev.servicebus.windows.net/lending";
        let bad = token(
            "https://dev.servicebus.windows.net/",
            "root",
            "wrong",
            Duration::from_secs(60),
        );
        assert!(authorize(Some(&bad), res, Claim::Send, &policies())
            .unwrap_err()
            .0
            .contains("InvalidSignature"));
        let expired =
            token_with_expiry("https://dev.servicebus.windows.net/", "root", "k3y", 1_000);
        assert!(authorize(Some(&expired), res, Claim::Send, &policies())
            .unwrap_err()
            .0
            .contains("Expired"));
        let app = token(
            "https://dev.servicebus.windows.net/",
            "app",
            "other",
            Duration::from_secs(60),
        );
        assert_eq!(
            authorize(Some(&app), res, Claim::Listen, &policies()),
            Ok(())
        );
        assert!(authorize(Some(&app), res, Claim::Manage, &policies())
            .unwrap_err()
            .0
            .contains("Manage"));
        assert!(authorize(None, res, Claim::Send, &policies()).is_err());
    }
}
