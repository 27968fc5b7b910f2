//! Transport URLs (`kafka://user:pw@b1:9092,b2:9092?partitions=6`): parsed by the `url`
//! crate in one place, with one rule for options: each transport takes the ones it knows,
//! and what is left is refused with the known ones listed.

use std::str::FromStr;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::error::{Error, Result};
use crate::redact::redact_url;
use crate::secret::Secret;

/// A transport's URL, parsed: scheme, user information, hosts, path and the options of
/// its query string, which the transport takes one by one.
///
/// Every error is a [`Config`](crate::ErrorKind::Config) error that names the transport,
/// shows the URL without its password, and says what to write instead. An option the
/// transport did not take is refused by [`finish`](ParsedUrl::finish), listing the
/// options it knows, so a misspelt option never passes silently.
///
/// ```
/// use std::time::Duration;
/// use tidings_core::transport::ParsedUrl;
///
/// let mut url = ParsedUrl::parse(
///     "Kafka",
///     "kafka://alice:s3cret@b1:9092,b2:9092?partitions=6&connect_timeout=2s",
///     &["kafka", "kafkas"],
///     "kafka://host:9092[,host:9092]?partitions=3",
/// )?;
/// assert_eq!(url.hosts(), ["b1:9092", "b2:9092"]);
/// assert_eq!(url.username().as_deref(), Some("alice"));
/// assert_eq!(url.password().unwrap().expose(), "s3cret");
/// assert_eq!(url.parsed::<u32>("partitions", "a whole number")?, Some(6));
/// assert_eq!(url.duration("connect_timeout")?, Some(Duration::from_secs(2)));
/// url.finish()?;
///
/// let mut url = ParsedUrl::parse("Kafka", "kafka://b1:9092?partitons=6", &["kafka"], "")?;
/// url.parsed::<u32>("partitions", "a whole number")?;
/// let err = url.finish().unwrap_err();
/// assert!(err.message().contains("unknown Kafka URL option `partitons`"), "{err}");
/// assert!(err.message().contains("partitions"), "{err}");
/// # Ok::<(), tidings_core::Error>(())
/// ```
#[derive(Debug)]
pub struct ParsedUrl {
    transport: &'static str,
    /// The URL as written, password hidden, for messages.
    shown: String,
    url: Url,
    hosts: Vec<String>,
    options: Vec<(String, String)>,
    known: Vec<&'static str>,
    also: Option<&'static str>,
}

impl ParsedUrl {
    /// Parse `url` for `transport` (its name in messages: `"Kafka"`), which takes the
    /// `schemes` (lowercase) and is written like `example` (shown in errors).
    ///
    /// The authority may list several hosts separated by commas (`b1:9092,b2:9092`), as
    /// Kafka bootstrap lists do; each is checked as a host of its own.
    pub fn parse(
        transport: &'static str,
        url: &str,
        schemes: &[&str],
        example: &str,
    ) -> Result<Self> {
        let invalid = |why: String| {
            Error::config(format!(
                "{} is not a {transport} URL: {why}; write {example}",
                redact_url(url)
            ))
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("it has no scheme".into()));
        };
        if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
            return Err(invalid(format!(
                "the {transport} transport takes {}, not {scheme}://",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        // The authority ends at the first `/`, `?` or `#`; its hosts follow the last `@`.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let hosts_start = authority.rfind('@').map_or(0, |at| at + 1);
        let hosts: Vec<String> = authority[hosts_start..]
            .split(',')
            .map(str::to_string)
            .collect();
        for host in hosts.iter().skip(1) {
            Url::parse(&format!("{scheme}://{host}"))
                .map_err(|e| invalid(format!("the host {host:?} is invalid ({e})")))?;
        }
        // The `url` crate takes one host: parse the URL with the first.
        let first = format!(
            "{scheme}://{}{}{}",
            &authority[..hosts_start],
            hosts[0],
            &rest[authority_end..]
        );
        let parsed = Url::parse(&first).map_err(|e| invalid(e.to_string()))?;
        let options = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let hosts = if hosts.len() == 1 && hosts[0].is_empty() {
            Vec::new()
        } else {
            hosts
        };
        Ok(ParsedUrl {
            transport,
            shown: redact_url(url),
            url: parsed,
            hosts,
            options,
            known: Vec::new(),
            also: None,
        })
    }

    /// The scheme, lowercase.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The hosts of the authority, each `host[:port]` as written; empty when there is none
    /// (`memory://`).
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The user name, percent-decoded; `None` when the URL has none.
    pub fn username(&self) -> Option<String> {
        Some(self.url.username())
            .filter(|u| !u.is_empty())
            .map(|u| percent_decode_str(u).decode_utf8_lossy().into_owned())
    }

    /// The password, percent-decoded; `None` when the URL has none.
    pub fn password(&self) -> Option<Secret> {
        self.url
            .password()
            .map(|p| Secret::new(percent_decode_str(p).decode_utf8_lossy()))
    }

    /// The path, percent-decoded and without its leading `/` (`""` when there is none).
    pub fn path(&self) -> String {
        let path = self.url.path().trim_start_matches('/');
        percent_decode_str(path).decode_utf8_lossy().into_owned()
    }

    /// Take the option `name` (the last value when it is repeated), marking it as known.
    pub fn option(&mut self, name: &'static str) -> Option<String> {
        if !self.known.contains(&name) {
            self.known.push(name);
        }
        let mut value = None;
        self.options.retain(|(k, v)| {
            let taken = k == name;
            if taken {
                value = Some(v.clone());
            }
            !taken
        });
        value
    }

    /// Take the option `name` parsed as `T`; a value that does not parse is an error that
    /// says the option should be `expected` (`"a whole number"`).
    pub fn parsed<T: FromStr>(&mut self, name: &'static str, expected: &str) -> Result<Option<T>> {
        self.option(name)
            .map(|value| value.parse().map_err(|_| self.bad(name, &value, expected)))
            .transpose()
    }

    /// Take the option `name` as a boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    pub fn flag(&mut self, name: &'static str) -> Result<Option<bool>> {
        self.option(name)
            .map(|value| match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(self.bad(name, &value, "true or false")),
            })
            .transpose()
    }

    /// Take the option `name` as a duration in humantime form (`10s`, `500ms`, `2m`).
    pub fn duration(&mut self, name: &'static str) -> Result<Option<Duration>> {
        self.option(name)
            .map(|value| {
                humantime::parse_duration(&value)
                    .map_err(|_| self.bad(name, &value, "a duration like 10s or 500ms"))
            })
            .transpose()
    }

    /// Accept the options `names` without taking their values: options a client library
    /// reads from the same URL itself (lapin's `heartbeat`).
    pub fn accept(&mut self, names: &[&'static str]) {
        for name in names {
            self.option(name);
        }
    }

    /// Take every option whose name `matches` (librdkafka's dotted properties), in order;
    /// `described` names them in the message for an unknown option (`"librdkafka
    /// properties, whose names contain a dot"`).
    pub fn matching(
        &mut self,
        matches: impl Fn(&str) -> bool,
        described: &'static str,
    ) -> Vec<(String, String)> {
        self.also = Some(described);
        let (taken, rest) = std::mem::take(&mut self.options)
            .into_iter()
            .partition(|(k, _)| matches(k));
        self.options = rest;
        taken
    }

    /// Refuse the options nobody took, naming the first and listing the known ones.
    pub fn finish(self) -> Result<()> {
        let Some((unknown, _)) = self.options.first() else {
            return Ok(());
        };
        let also = self.also.map(|a| format!(", and {a}")).unwrap_or_default();
        Err(Error::config(format!(
            "unknown {} URL option `{unknown}` in {}; the options are {}{also}",
            self.transport,
            self.shown,
            self.known.join(", ")
        )))
    }

    fn bad(&self, name: &str, value: &str, expected: &str) -> Error {
        Error::config(format!(
            "the {} URL option {name}={value:?} is not {expected}",
            self.transport
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn parse(url: &str) -> Result<ParsedUrl> {
        ParsedUrl::parse("Test", url, &["test", "tests"], "test://host")
    }

    #[test]
    fn hosts_user_and_path_are_decoded() {
        let url = parse("TEST://al%40ce:p%40ss@h1:1,h2:2/v%2fh?x=1").unwrap();
        assert_eq!(url.scheme(), "test");
        assert_eq!(url.hosts(), ["h1:1", "h2:2"]);
        assert_eq!(url.username().as_deref(), Some("al@ce"));
        assert_eq!(url.password().unwrap().expose(), "p@ss");
        assert_eq!(url.path(), "v/h");
        let url = parse("test://").unwrap();
        assert!(url.hosts().is_empty() && url.username().is_none() && url.password().is_none());
    }

    #[test]
    fn bad_urls_say_what_to_write_and_hide_the_password() {
        for (url, needle) in [
            ("nothing", "has no scheme"),
            (
                "amqp://u:hunter2@h",
                "takes test:// or tests://, not amqp://",
            ),
            ("test://u:hunter2@h:notaport", "invalid port"),
            (
                "test://u:hunter2@h1:1,h 2:2",
                "the host \"h 2:2\" is invalid",
            ),
        ] {
            let err = parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            let shown = err.to_string();
            assert!(shown.contains(needle), "{url}: {shown}");
            assert!(shown.contains("write test://host"), "{url}: {shown}");
            assert!(!shown.contains("hunter2"), "{url}: {shown}");
        }
    }

    #[test]
    fn options_are_taken_once_and_the_rest_refused() {
        let mut url = parse("test://h?n=3&on=yes&wait=250ms&a.b=c&lib=1&n=4").unwrap();
        assert_eq!(url.parsed::<u32>("n", "a whole number").unwrap(), Some(4));
        assert_eq!(url.flag("on").unwrap(), Some(true));
        assert_eq!(
            url.duration("wait").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(url.option("absent"), None);
        url.accept(&["lib"]);
        assert_eq!(
            url.matching(|k| k.contains('.'), "dotted names"),
            [("a.b".to_string(), "c".to_string())]
        );
        url.finish().unwrap();

        let mut url = parse("test://u:hunter2@h?n=3&colour=blue&key=k").unwrap();
        url.parsed::<u32>("n", "a whole number").unwrap();
        url.option("key");
        let err = url.finish().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let shown = err.to_string();
        assert!(
            shown.contains("unknown Test URL option `colour`"),
            "{shown}"
        );
        assert!(shown.contains("the options are n, key"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn bad_values_name_the_option_and_what_it_takes() {
        let mut url = parse("test://h?n=many&on=maybe&wait=soon").unwrap();
        let err = url.parsed::<u32>("n", "a whole number").unwrap_err();
        assert!(
            err.to_string().contains("n=\"many\" is not a whole number"),
            "{err}"
        );
        let err = url.flag("on").unwrap_err();
        assert!(err.to_string().contains("is not true or false"), "{err}");
        let err = url.duration("wait").unwrap_err();
        assert!(err.to_string().contains("a duration like 10s"), "{err}");
    }
}
