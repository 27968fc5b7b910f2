//! Dates and durations as the REST protocol writes them.

use std::time::{Duration, SystemTime};

/// RFC 1123 (`Sun, 06 Nov 1994 08:49:37 GMT`), as in BrokerProperties.
pub(crate) fn rfc1123(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Parse a BrokerProperties date: RFC 1123 with `GMT`, or the RFC 2822 form with a
/// `+0000` offset that some clients write.
pub(crate) fn parse_rfc1123(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Ok(t) = httpdate::parse_http_date(s) {
        return Some(t);
    }
    for suffix in ["+0000", "-0000", "UTC", "Z"] {
        if let Some(head) = s.strip_suffix(suffix) {
            if let Ok(t) =
                httpdate::parse_http_date(&format!("{}GMT", head.trim_end().to_string() + " "))
            {
                return Some(t);
            }
        }
    }
    humantime::parse_rfc3339_weak(s).ok()
}

/// ISO 8601 instant with a `Z`, as in Atom.
pub(crate) fn iso8601(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An ISO 8601 duration (`PT1M`, `P10675199DT2H48M5.4775807S`), as in entity descriptions.
pub(crate) fn format_duration(d: Duration) -> String {
    let total = d.as_secs();
    let (days, rem) = (total / 86_400, total % 86_400);
    let (h, rem) = (rem / 3600, rem % 3600);
    let (m, s) = (rem / 60, rem % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    out.push('T');
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{:09}", nanos);
        out.push_str(&format!("{s}.{}S", frac.trim_end_matches('0')));
    } else if s > 0 || out.ends_with('T') {
        out.push_str(&format!("{s}S"));
    }
    out
}

/// Parse an ISO 8601 duration; `None` if malformed.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut num = String::new();
    for c in date.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'Y' => secs += num.parse::<f64>().ok()? * 365.0 * 86_400.0,
            'M' => secs += num.parse::<f64>().ok()? * 30.0 * 86_400.0,
            'W' => secs += num.parse::<f64>().ok()? * 7.0 * 86_400.0,
            'D' => secs += num.parse::<f64>().ok()? * 86_400.0,
            _ => return None,
        }
        if c.is_ascii_alphabetic() {
            num.clear();
        }
    }
    for c in time.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'H' => secs += num.parse::<f64>().ok()? * 3600.0,
            'M' => secs += num.parse::<f64>().ok()? * 60.0,
            'S' => secs += num.parse::<f64>().ok()?,
            _ => return None,
        }
        if c.is_ascii_alphabetic() {
            num.clear();
        }
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs_f64(secs.min(u64::MAX as f64 / 2.0)))
}

/// The "forever" TTL Service Bus reports: TimeSpan.MaxValue.
pub(crate) const MAX_TTL: Duration =
    Duration::from_secs(10_675_199 * 86_400 + 2 * 3600 + 48 * 60 + 5);

/// XML text escaping.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON string literal using only ASCII (non-ASCII as `\uXXXX`), so it fits in a header.
pub(crate) fn ascii_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("PT1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("P1DT2H"), Some(Duration::from_secs(93_600)));
        assert_eq!(format_duration(Duration::from_secs(60)), "PT1M");
        assert_eq!(format_duration(Duration::from_millis(1500)), "PT1.5S");
        assert_eq!(parse_duration(&format_duration(MAX_TTL)), Some(MAX_TTL));
        assert_eq!(parse_duration("1M"), None);
    }

    #[test]
    fn broker_dates_parse_in_both_forms() {
        let t = parse_rfc1123("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_rfc1123("Sun, 06 Nov 1994 08:49:37 +0000"), Some(t));
        assert_eq!(rfc1123(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn json_strings_stay_ascii() {
        assert_eq!(ascii_json_string("a\"b"), "\"a\\\"b\"");
        assert_eq!(ascii_json_string("é"), "\"\\u00e9\"");
    }
}
