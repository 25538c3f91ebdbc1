//! The route table: which requests the proxy will sign at all. Pure, no I/O.
//!
//! A request is forwarded only if its path is clean (no dot segments, no empty segments, only
//! unreserved characters, so nothing can be smuggled past the match by encoding) and matches
//! an allowed (method, pattern) pair. The Host header must name the proxy itself or the
//! configured upstream: the upstream, service and region come from configuration, never from
//! the request, so the proxy is never an open signing proxy.

use http::Method;

/// One allowed pattern: segments are literals, `{ws}` (an AMP workspace id), `{name}` (one
/// clean segment) or a trailing `**` (one or more clean segments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Name used in metrics and logs.
    pub name: &'static str,
    pub methods: Vec<Method>,
    pub pattern: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Workspace,
    Any,
    Rest,
}

impl Route {
    /// Builds a route from `/a/{ws}/b/{name}/**`-style text.
    pub fn new(name: &'static str, methods: &[Method], pattern: &str) -> Self {
        let pattern = pattern
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s {
                "{ws}" => Segment::Workspace,
                "{name}" => Segment::Any,
                "**" => Segment::Rest,
                lit => Segment::Literal(lit.to_owned()),
            })
            .collect();
        Route {
            name,
            methods: methods.to_vec(),
            pattern,
        }
    }

    fn matches(&self, segments: &[&str], workspace: Option<&str>) -> bool {
        let mut i = 0;
        for seg in &self.pattern {
            match seg {
                Segment::Rest => return i < segments.len(),
                _ if i >= segments.len() => return false,
                Segment::Literal(l) if l != segments[i] => return false,
                Segment::Workspace
                    if !is_workspace_id(segments[i])
                        || workspace.is_some_and(|w| w != segments[i]) =>
                {
                    return false
                }
                _ => {}
            }
            i += 1;
        }
        i == segments.len()
    }
}

fn is_workspace_id(s: &str) -> bool {
    s.len() > 3 && s.starts_with("ws-") && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Why a request was refused; each maps to a status and a short, non-revealing body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Host header names neither this proxy nor the upstream: 403.
    ForeignHost,
    /// Path is not clean (dot or empty segments, encoded or unusual characters): 400.
    UncleanPath,
    /// No route has this path: 404.
    NoRoute,
    /// A route has this path but not this method: 405.
    Method,
    /// A browser's cross-site request (`Origin`, or `Sec-Fetch-Site` not `none` or
    /// `same-origin`): 403. Prometheus and Grafana's server side never send these.
    CrossSite,
    /// remote_write without `Content-Type: application/x-protobuf`: 415. A browser cannot send
    /// that type without a preflight, and preflights are refused.
    ContentType,
    /// A signed header (`Host`, `Content-Type`, `Content-Encoding`) given twice: 400. One value
    /// would be signed and both forwarded, and the upstream would refuse the signature.
    DuplicateHeader,
    /// `Content-Length` over the body limit: 413.
    TooLarge,
}

impl Refusal {
    pub fn status(self) -> http::StatusCode {
        match self {
            Refusal::ForeignHost => http::StatusCode::FORBIDDEN,
            Refusal::UncleanPath => http::StatusCode::BAD_REQUEST,
            Refusal::NoRoute => http::StatusCode::NOT_FOUND,
            Refusal::Method => http::StatusCode::METHOD_NOT_ALLOWED,
            Refusal::CrossSite => http::StatusCode::FORBIDDEN,
            Refusal::ContentType => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::DuplicateHeader => http::StatusCode::BAD_REQUEST,
            Refusal::TooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::ForeignHost => {
                "moninit proxy: this proxy signs only for its configured upstream\n"
            }
            Refusal::UncleanPath => "moninit proxy: path not accepted\n",
            Refusal::NoRoute => "moninit proxy: path not allowed by the route table\n",
            Refusal::Method => "moninit proxy: method not allowed for this path\n",
            Refusal::CrossSite => {
                "moninit proxy: browser requests from another site are refused (Origin or Sec-Fetch-Site)\n"
            }
            Refusal::ContentType => {
                "moninit proxy: remote_write needs Content-Type: application/x-protobuf\n"
            }
            Refusal::DuplicateHeader => {
                "moninit proxy: Host, Content-Type and Content-Encoding may each appear once\n"
            }
            Refusal::TooLarge => "moninit proxy: request body over the limit\n",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Refusal::ForeignHost => "refused_host",
            Refusal::UncleanPath => "refused_path",
            Refusal::NoRoute => "refused_route",
            Refusal::Method => "refused_method",
            Refusal::CrossSite => "refused_cross_site",
            Refusal::ContentType => "refused_content_type",
            Refusal::DuplicateHeader => "refused_duplicate_header",
            Refusal::TooLarge => "refused_too_large",
        }
    }
}

/// The allowed routes plus the host check.
#[derive(Clone, Debug)]
pub struct Table {
    routes: Vec<Route>,
    /// Only this AMP workspace, if set.
    workspace: Option<String>,
    /// Host names (without port) a request may carry.
    hosts: Vec<String>,
}

impl Table {
    pub fn new(routes: Vec<Route>, workspace: Option<String>, mut hosts: Vec<String>) -> Self {
        hosts.extend(["localhost", "127.0.0.1", "[::1]", "::1"].map(String::from));
        for h in &mut hosts {
            h.make_ascii_lowercase();
        }
        Table {
            routes,
            workspace,
            hosts,
        }
    }

    /// The route for this request, or why it is refused. `host` is the request's Host
    /// header (empty when missing or unreadable, which no allowed host matches).
    pub fn check(&self, method: &Method, host: &str, path: &str) -> Result<&Route, Refusal> {
        if !self.host_allowed(host) {
            return Err(Refusal::ForeignHost);
        }
        let segments = clean_segments(path).ok_or(Refusal::UncleanPath)?;
        let mut path_matched = false;
        for route in &self.routes {
            if route.matches(&segments, self.workspace.as_deref()) {
                if route.methods.contains(method) {
                    return Ok(route);
                }
                path_matched = true;
            }
        }
        Err(if path_matched {
            Refusal::Method
        } else {
            Refusal::NoRoute
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = if host.starts_with('[') {
            host.split_inclusive(']').next().unwrap_or(&host).to_owned()
        } else {
            host.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(host.clone(), |(h, _)| h.to_owned())
        };
        self.hosts.contains(&name)
    }
}

/// The path's segments if it is clean: absolute, no `.`/`..`/empty segments, and only
/// unreserved characters (`A-Z a-z 0-9 - . _ ~`) plus `:` and `@`. Rejecting `%` means no
/// encoded slash or dot can make the upstream see a different path than the route table did.
pub fn clean_segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut out = Vec::new();
    for seg in rest.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:@".contains(&b));
        if !ok {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

/// AMP's data-plane APIs: remote_write, the Prometheus query and metadata APIs, and the
/// read-only rules and alertmanager APIs.
pub fn amp() -> Vec<Route> {
    const WRITE: &[Method] = &[Method::POST];
    const READ: &[Method] = &[Method::GET, Method::POST];
    const GET: &[Method] = &[Method::GET];
    vec![
        Route::new(
            "remote_write",
            WRITE,
            "/workspaces/{ws}/api/v1/remote_write",
        ),
        Route::new("query", READ, "/workspaces/{ws}/api/v1/query"),
        Route::new("query_range", READ, "/workspaces/{ws}/api/v1/query_range"),
        Route::new("series", READ, "/workspaces/{ws}/api/v1/series"),
        Route::new("labels", READ, "/workspaces/{ws}/api/v1/labels"),
        Route::new(
            "label_values",
            GET,
            "/workspaces/{ws}/api/v1/label/{name}/values",
        ),
        Route::new("metadata", GET, "/workspaces/{ws}/api/v1/metadata"),
        Route::new(
            "query_exemplars",
            READ,
            "/workspaces/{ws}/api/v1/query_exemplars",
        ),
        Route::new("buildinfo", GET, "/workspaces/{ws}/api/v1/status/buildinfo"),
        Route::new("rules", GET, "/workspaces/{ws}/api/v1/rules"),
        Route::new("alerts", GET, "/workspaces/{ws}/api/v1/alerts"),
        Route::new(
            "alertmanager",
            GET,
            "/workspaces/{ws}/alertmanager/api/v2/**",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(
            amp(),
            None,
            vec!["aps-workspaces.us-east-1.amazonaws.com".into()],
        )
    }

    #[test]
    fn amp_data_plane_paths_are_allowed() {
        let t = table();
        let ok = |m: Method, p: &str| t.check(&m, "127.0.0.1:8005", p).map(|r| r.name);
        assert_eq!(
            ok(Method::POST, "/workspaces/ws-abc/api/v1/remote_write"),
            Ok("remote_write")
        );
        assert_eq!(
            ok(Method::GET, "/workspaces/ws-abc/api/v1/query"),
            Ok("query")
        );
        assert_eq!(
            ok(Method::POST, "/workspaces/ws-abc/api/v1/query_range"),
            Ok("query_range")
        );
        assert_eq!(
            ok(Method::GET, "/workspaces/ws-abc/api/v1/label/job/values"),
            Ok("label_values")
        );
        assert_eq!(
            ok(
                Method::GET,
                "/workspaces/ws-abc/alertmanager/api/v2/alerts/groups"
            ),
            Ok("alertmanager")
        );
        assert_eq!(
            ok(Method::GET, "/workspaces/ws-abc/api/v1/status/buildinfo"),
            Ok("buildinfo")
        );
    }

    #[test]
    fn everything_else_is_refused_before_signing() {
        let t = table();
        let check = |m: Method, h: &str, p: &str| t.check(&m, h, p).map(|r| r.name);
        let local = "127.0.0.1:8005";
        assert_eq!(
            check(
                Method::GET,
                "sts.amazonaws.com",
                "/workspaces/ws-a/api/v1/query"
            ),
            Err(Refusal::ForeignHost)
        );
        assert_eq!(
            check(
                Method::GET,
                "evil.example:443",
                "/workspaces/ws-a/api/v1/query"
            ),
            Err(Refusal::ForeignHost)
        );
        assert_eq!(
            check(Method::POST, local, "/workspaces"),
            Err(Refusal::NoRoute)
        );
        assert_eq!(
            check(Method::DELETE, local, "/workspaces/ws-a/api/v1/query"),
            Err(Refusal::Method)
        );
        assert_eq!(
            check(Method::GET, local, "/workspaces/ws-a/api/v1/remote_write"),
            Err(Refusal::Method)
        );
        assert_eq!(
            check(
                Method::POST,
                local,
                "/workspaces/ws-a/alertmanager/api/v2/silences"
            ),
            Err(Refusal::Method)
        );
        assert_eq!(
            check(Method::GET, local, "/workspaces/ws-a/api/v1/../../x"),
            Err(Refusal::UncleanPath)
        );
        assert_eq!(
            check(Method::GET, local, "/workspaces/ws-a/api/v1/%2e%2e/query"),
            Err(Refusal::UncleanPath)
        );
        assert_eq!(
            check(Method::GET, local, "/workspaces//api/v1/query"),
            Err(Refusal::UncleanPath)
        );
        assert_eq!(
            check(Method::GET, local, "/workspaces/not-a-ws/api/v1/query"),
            Err(Refusal::NoRoute)
        );
        assert_eq!(
            check(Method::GET, local, "/workspaces/ws-a/alertmanager/api/v2"),
            Err(Refusal::NoRoute)
        );
        assert!(check(
            Method::GET,
            "aps-workspaces.us-east-1.amazonaws.com",
            "/workspaces/ws-a/api/v1/query"
        )
        .is_ok());
        assert!(check(Method::GET, "[::1]:8005", "/workspaces/ws-a/api/v1/query").is_ok());
    }

    #[test]
    fn one_workspace_restriction_refuses_the_others() {
        let t = Table::new(amp(), Some("ws-mine".into()), vec![]);
        assert!(t
            .check(
                &Method::POST,
                "localhost",
                "/workspaces/ws-mine/api/v1/remote_write"
            )
            .is_ok());
        assert_eq!(
            t.check(
                &Method::POST,
                "localhost",
                "/workspaces/ws-other/api/v1/remote_write"
            )
            .unwrap_err(),
            Refusal::NoRoute
        );
    }
}
