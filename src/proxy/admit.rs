//! Admission: everything decided from the request head alone, before the request may take a
//! slot, so a refusal never waits and never holds one. Pure: no I/O, no clock.
//!
//! In order: the Host and route table ([`super::route`]); browsers (an `Origin` header, or
//! `Sec-Fetch-Site` other than `none` or `same-origin`: a web page on this host must not get
//! its requests signed with the instance's role); remote_write's `Content-Type` (only
//! `application/x-protobuf`, which no browser sends without a preflight); signed headers
//! given twice; and the announced body length.
//!
//! Grafana never trips the browser rule: its data source proxy removes `Origin` and
//! `Referer` before forwarding (`proxyutil.PrepareProxyRequest`), and passes the browser's
//! `Sec-Fetch-Site: same-origin`, which is accepted; its backend queries carry neither.

use http::header::{self, HeaderMap};
use http::Method;

use super::route::{Refusal, Table};

/// The headers that are signed: each may appear once.
pub const SIGNED: [header::HeaderName; 3] =
    [header::HOST, header::CONTENT_TYPE, header::CONTENT_ENCODING];

/// The route's name if `method`, `path` and `headers` may be forwarded.
pub fn admit(
    routes: &Table,
    body_limit: usize,
    method: &Method,
    host_from_uri: Option<&str>,
    path: &str,
    headers: &HeaderMap,
) -> Result<&'static str, Refusal> {
    // A missing or non-ASCII Host is refused like a foreign one (the empty name matches no
    // allowed host).
    let host = match headers.get(header::HOST) {
        Some(h) => h.to_str().unwrap_or(""),
        None => host_from_uri.unwrap_or(""),
    };
    let route = routes.check(method, host, path)?.name;
    if headers.contains_key(header::ORIGIN) {
        return Err(Refusal::CrossSite);
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"none" | b"same-origin") {
            return Err(Refusal::CrossSite);
        }
    }
    if SIGNED
        .iter()
        .any(|name| headers.get_all(name).iter().nth(1).is_some())
    {
        return Err(Refusal::DuplicateHeader);
    }
    if route == "remote_write" {
        let protobuf = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-protobuf"));
        if !protobuf {
            return Err(Refusal::ContentType);
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit as u64) {
        return Err(Refusal::TooLarge);
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const WS: &str = "ws-0b1c2d3e-aaaa-bbbb-cccc-123456789012";

    fn table() -> Table {
        Table::new(
            crate::proxy::route::amp(),
            Some(WS.into()),
            vec!["aps-workspaces.us-east-1.amazonaws.com".into()],
        )
    }

    fn check(
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<&'static str, Refusal> {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8005"));
        for (k, v) in headers {
            h.append(
                header::HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        admit(&table(), 1024, &method, None, path, &h)
    }

    fn write() -> String {
        format!("/workspaces/{WS}/api/v1/remote_write")
    }

    fn query() -> String {
        format!("/workspaces/{WS}/api/v1/query")
    }

    #[test]
    fn prometheus_and_grafana_request_shapes_pass() {
        assert_eq!(
            check(
                Method::POST,
                &write(),
                &[
                    ("content-type", "application/x-protobuf"),
                    ("content-encoding", "snappy"),
                    ("x-prometheus-remote-write-version", "0.1.0"),
                ]
            ),
            Ok("remote_write")
        );
        // Grafana's data source proxy: Origin removed, the browser's same-origin kept.
        assert!(check(
            Method::POST,
            &query(),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-site", "same-origin"),
                ("x-grafana-org-id", "1"),
            ]
        )
        .is_ok());
    }

    #[test]
    fn browsers_from_other_sites_are_refused() {
        let cross = [
            vec![
                ("origin", "https://evil.example"),
                ("content-type", "application/x-protobuf"),
            ],
            vec![
                ("sec-fetch-site", "cross-site"),
                ("content-type", "application/x-protobuf"),
            ],
            vec![
                ("sec-fetch-site", "same-site"),
                ("content-type", "application/x-protobuf"),
            ],
            vec![
                ("origin", "null"),
                ("content-type", "application/x-protobuf"),
            ],
        ];
        for h in cross {
            assert_eq!(
                check(Method::POST, &write(), &h),
                Err(Refusal::CrossSite),
                "{h:?}"
            );
        }
        // A "simple" cross-site POST without Origin (old browsers) still cannot pass as text.
        assert_eq!(
            check(Method::POST, &write(), &[("content-type", "text/plain")]),
            Err(Refusal::ContentType)
        );
    }

    #[test]
    fn duplicated_signed_headers_and_oversized_bodies_are_refused() {
        assert_eq!(
            check(
                Method::POST,
                &write(),
                &[
                    ("content-type", "application/x-protobuf"),
                    ("content-type", "text/plain"),
                ]
            ),
            Err(Refusal::DuplicateHeader)
        );
        assert_eq!(
            check(
                Method::POST,
                &write(),
                &[
                    ("content-type", "application/x-protobuf"),
                    ("content-length", "1025")
                ]
            ),
            Err(Refusal::TooLarge)
        );
        // A duplicated unsigned header is the client's business.
        assert!(check(Method::GET, &query(), &[("accept", "a"), ("accept", "b")]).is_ok());
    }
}
