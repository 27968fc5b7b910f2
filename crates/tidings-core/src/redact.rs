//! Redacting addresses for messages and logs: one rule for every transport.

/// `url` without its password or keys, for messages and logs: the password of the user
/// information (`amqp://guest:***@host`), the values of `key`, `password`, `secret`,
/// `sig`, `sharedaccesskey` and `sasl_password` query options, and everything of a Service
/// Bus connection string but its endpoint.
///
/// ```
/// use tidings_core::transport::redact_url;
/// assert_eq!(redact_url("amqp://guest:s3cret@host/%2f"), "amqp://guest:***@host/%2f");
/// ```
pub fn redact_url(url: &str) -> String {
    if url.to_ascii_lowercase().contains("sharedaccesskey=") {
        // A connection string: keep only the endpoint.
        let endpoint = url
            .split(';')
            .find(|part| {
                part.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("endpoint=")
            })
            .unwrap_or("");
        return format!("{endpoint};SharedAccessKey=***");
    }
    redact_query(&redact_userinfo(url))
}

/// The password of the user information hidden; the authority ends at the first `/`, `?`
/// or `#` after the scheme, so an `@` in the path or query is not taken for it.
fn redact_userinfo(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    match authority.rfind('@').map(|at| authority.split_at(at)) {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{}{user}:***{host}{}", &url[..start], &url[end..])
        }
        _ => url.to_string(),
    }
}

fn redact_query(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if matches!(
                    k.to_ascii_lowercase().as_str(),
                    "key" | "password" | "sharedaccesskey" | "sig" | "secret" | "sasl_password"
                ) =>
            {
                format!("{k}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url as redact;

    #[test]
    fn redact_hides_passwords_and_keys() {
        assert_eq!(
            redact("amqp://guest:s3cret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("memory://"), "memory://");
        // Everything up to the last `@` of the authority is user information.
        assert_eq!(
            redact("amqps://u:p@ss:w@rd@host/vh?heartbeat=10"),
            "amqps://u:***@host/vh?heartbeat=10"
        );
        assert_eq!(redact("amqp://user@host"), "amqp://user@host");
        // An `@` after the authority is not user information.
        assert_eq!(
            redact("amqp://u:pw@host/vh?reply_to=a@b"),
            "amqp://u:***@host/vh?reply_to=a@b"
        );
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(
            redact("servicebus://dev?key_name=root&key=s3cr%2Bt&endpoint=http://127.0.0.1:5300"),
            "servicebus://dev?key_name=root&key=***&endpoint=http://127.0.0.1:5300"
        );
        assert_eq!(
            redact("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=abc"),
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=***"
        );
    }
}
