//! One request through the proxy, in steps: admit it from its head ([`admit`]), read and
//! hash its body once ([`body`]), sign, send, look at an error answer, stream the answer back.
//!
//! Invariants:
//! - a request refused by admission never waits and never takes a slot; one refused by the
//!   body limit or the concurrency limit never causes a connection to the upstream;
//! - bodies are read only by requests holding one of the `max_concurrent` body slots, so
//!   body memory is bounded by `body_limit × max_concurrent` whatever the chunking; requests
//!   without a body need only a send slot, so clients trickling bodies cannot starve them;
//! - incoming `Authorization`, `X-Amz-*`, hop-by-hop headers and `--strip` headers are
//!   dropped; only `host`, `content-type`, `content-encoding` and the headers the signer adds
//!   are signed, since no intermediary rewrites those;
//! - the query sent is exactly the canonical query signed;
//! - the upstream's status, `Retry-After` and body pass through untouched (Prometheus owns
//!   retries); moninit's own errors (502, 504, 413, 503) say what failed and nothing else;
//! - an `ExpiredToken` answer forces one credential refresh and one retry.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::Semaphore;

use super::chunks::Chunks;
use super::credentials::Cache;
use super::sign::{self, Payload};
use super::Settings;
use super::{admit, body};
use crate::admin::metrics;

pub type Body = BoxBody<Bytes, hyper::Error>;
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Chunks>;

/// How long a request may wait for a free slot before it gets 503.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The SHA-256 of an empty body.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Largest error body read from the upstream to look for `ExpiredToken`.
const ERROR_PEEK_LIMIT: usize = 64 * 1024;

/// Everything a request needs, shared by all connections and threads.
pub struct State {
    pub settings: Settings,
    pub credentials: Cache,
    pub metrics: metrics::Proxy,
    /// Requests reading their body: bounds body memory.
    pub body_permits: Semaphore,
    /// Requests being sent upstream.
    pub send_permits: Semaphore,
    /// A refusal for clock skew has been logged (it is logged once).
    pub skew_logged: std::sync::atomic::AtomicBool,
}

/// What one proxy thread serves with: the shared state and the thread's own pool of upstream
/// connections (a pooled connection's task runs on the thread that opened it, so a request
/// never waits on another thread).
pub struct Worker {
    pub state: Arc<State>,
    pub client: HttpClient,
}

/// The connector to the upstream (rustls, system roots, HTTP/1.1); cloning it shares the TLS
/// configuration.
pub fn connector(
    settings: &Settings,
) -> std::io::Result<hyper_rustls::HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(settings.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// A keep-alive client to the upstream; its connections' tasks run on the runtime that
/// opens them.
pub fn client(
    settings: &Settings,
    connector: hyper_rustls::HttpsConnector<HttpConnector>,
) -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .pool_max_idle_per_host(settings.max_concurrent)
        .build(connector)
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn plain(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(message));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Handles one request; never fails (errors become responses).
pub async fn handle(worker: Arc<Worker>, req: Request<Incoming>) -> Response<Body> {
    let state = &*worker.state;
    let _in_flight = state.metrics.in_flight();
    let s = &state.settings;
    let (parts, body) = req.into_parts();
    // Refusals are decided from the head alone: they never wait and never hold a slot.
    let route = match admit::admit(
        &s.routes,
        s.body_limit,
        &parts.method,
        parts.uri.host(),
        parts.uri.path(),
        &parts.headers,
    ) {
        Ok(route) => route,
        Err(refusal) => {
            tracing::debug!(method = %parts.method, path = parts.uri.path(), reason = refusal.label(), "request refused");
            state
                .metrics
                .request(refusal.label(), refusal.status().as_u16());
            return plain(refusal.status(), refusal.message());
        }
    };
    let resp = match admitted(state, &worker.client, route, &parts, body).await {
        Ok(resp) | Err(resp) => resp,
    };
    state.metrics.request(route, resp.status().as_u16());
    resp
}

/// Body slots bound body memory (body limit × slots); send slots bound upstream requests.
/// A request without a body never waits behind bodies that are still arriving. Waiting for
/// a slot lasts at most [`QUEUE_WAIT`]: a burst queues rather than failing.
async fn admitted(
    state: &State,
    client: &HttpClient,
    route: &'static str,
    parts: &http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, Response<Body>> {
    let s = &state.settings;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (_body_slot, chunks, sha256) = if hyper::body::Body::is_end_stream(&body) {
        (None, Chunks::default(), EMPTY_SHA256.to_owned())
    } else {
        let slot = slot(state, &state.body_permits).await?;
        let (chunks, sha256) = read_body(body, declared, s).await?;
        (Some(slot), chunks, sha256)
    };
    state.metrics.body_size(chunks.len());
    let _send_slot = slot(state, &state.send_permits).await?;
    Ok(forward(state, client, route, parts, chunks, &sha256).await)
}

async fn slot<'a>(
    state: &State,
    permits: &'a Semaphore,
) -> Result<tokio::sync::SemaphorePermit<'a>, Response<Body>> {
    // A free slot is taken at once, with no timer to arm.
    if let Ok(permit) = permits.try_acquire() {
        return Ok(permit);
    }
    match tokio::time::timeout(QUEUE_WAIT, permits.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            state.metrics.request("refused_busy", 503);
            let mut resp = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "moninit proxy: too many requests in flight\n",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(resp)
        }
    }
}

/// Step 1: the body, hashed once, bounded in size, memory and time.
async fn read_body(
    body: Incoming,
    declared: Option<u64>,
    s: &Settings,
) -> Result<(Chunks, String), Response<Body>> {
    let limits = body::Limits {
        max: s.body_limit,
        total: s.body_timeout,
        stall: s.body_stall,
        min_rate: s.body_min_rate,
        grace: body::GRACE,
    };
    body::read(body, declared, limits)
        .await
        .map_err(|e| match e {
            body::Error::TooLarge => plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "moninit proxy: request body over the limit\n",
            ),
            body::Error::Read => plain(
                StatusCode::BAD_REQUEST,
                "moninit proxy: could not read the request body\n",
            ),
            body::Error::Slow => plain(
                StatusCode::REQUEST_TIMEOUT,
                "moninit proxy: request body too slow (no progress, or under the minimum rate)\n",
            ),
        })
}

/// Where the request goes and what it carries, before signing.
struct Target {
    /// The URI signed (with `sign_host` when set).
    signed_uri: String,
    /// The URI sent (the upstream's own authority).
    send_uri: String,
    headers: HeaderMap,
}

fn target(s: &Settings, parts: &http::request::Parts) -> Target {
    let host = s.sign_host.as_deref().unwrap_or(&s.upstream.authority);
    let (signed_uri, send_uri) = uris(&s.upstream, host, parts.uri.path(), parts.uri.query());
    Target {
        signed_uri,
        send_uri,
        headers: forwarded_headers(&parts.headers, &s.strip, host),
    }
}

/// The URI signed (for `sign_host`) and the URI sent (to the upstream's authority): the same
/// path and the same canonical query, so what is sent is exactly what was signed.
pub(crate) fn uris(
    upstream: &super::Upstream,
    sign_host: &str,
    path: &str,
    query: Option<&str>,
) -> (String, String) {
    let query = sign::canonical_query(query.unwrap_or(""));
    let path_and_query = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    (
        format!("{}://{}{}", upstream.scheme, sign_host, path_and_query),
        format!(
            "{}://{}{}",
            upstream.scheme, upstream.authority, path_and_query
        ),
    )
}

/// Steps 2 to 4, with one retry after a forced credential refresh on `ExpiredToken`.
async fn forward(
    state: &State,
    client: &HttpClient,
    route: &'static str,
    parts: &http::request::Parts,
    body: Chunks,
    sha256: &str,
) -> Response<Body> {
    let target = target(&state.settings, parts);
    let mut credentials = match state.credentials.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot sign: no credentials");
            return plain(
                StatusCode::BAD_GATEWAY,
                "moninit proxy: no AWS credentials to sign with\n",
            );
        }
    };
    let mut retried = false;
    loop {
        let started = Instant::now();
        let signed = sign_headers(
            state,
            &parts.method,
            &target.signed_uri,
            &target.headers,
            sha256,
            &body,
            &credentials,
        );
        state.metrics.signing(started.elapsed());
        let signed = match signed {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "signing failed");
                return plain(StatusCode::BAD_GATEWAY, "moninit proxy: signing failed\n");
            }
        };
        let resp = match send(
            state,
            client,
            route,
            &parts.method,
            &target.send_uri,
            signed,
            body.clone(),
        )
        .await
        {
            Ok(resp) => resp,
            Err(resp) => return resp,
        };
        match look_at_error(state, route, resp, retried).await {
            Answer::Pass(resp) => return resp,
            Answer::Expired(parts, bytes) => {
                match state.credentials.force_refresh(&credentials).await {
                    Ok(c) => {
                        credentials = c;
                        retried = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "credential refresh failed");
                        return respond(parts, full(bytes));
                    }
                }
            }
        }
    }
}

/// Step 3: one request upstream, within the upstream timeout.
async fn send(
    state: &State,
    client: &HttpClient,
    route: &'static str,
    method: &http::Method,
    uri: &str,
    headers: HeaderMap,
    body: Chunks,
) -> Result<Response<Incoming>, Response<Body>> {
    let s = &state.settings;
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if let Some(h) = req.headers_mut() {
        *h = headers;
    }
    let req = req.body(body).map_err(|_| {
        plain(
            StatusCode::BAD_REQUEST,
            "moninit proxy: request not accepted\n",
        )
    })?;
    let sent = Instant::now();
    let result = tokio::time::timeout(s.upstream_timeout, client.request(req)).await;
    state.metrics.upstream_latency(route, sent.elapsed());
    match result {
        Ok(Ok(resp)) => {
            if let Some(skew) = resp
                .headers()
                .get(header::DATE)
                .and_then(|d| super::clock::skew(d, SystemTime::now()))
            {
                state.metrics.clock_skew(skew);
            }
            Ok(resp)
        }
        Ok(Err(e)) => {
            tracing::warn!(route, error = %crate::source::chain(&e), "upstream request failed");
            Err(plain(
                StatusCode::BAD_GATEWAY,
                "moninit proxy: upstream unreachable\n",
            ))
        }
        Err(_) => {
            tracing::warn!(
                route,
                timeout_s = s.upstream_timeout.as_secs(),
                "upstream did not answer in time"
            );
            Err(plain(
                StatusCode::GATEWAY_TIMEOUT,
                "moninit proxy: upstream did not answer in time\n",
            ))
        }
    }
}

/// What an upstream answer means for the proxy.
enum Answer {
    /// Hand it to the client as it is.
    Pass(Response<Body>),
    /// `ExpiredToken`: refresh the credentials and retry once (its parts and body are kept
    /// in case the refresh fails).
    Expired(http::response::Parts, Bytes),
}

/// Step 4: AWS error bodies are small and sized; only those are read, to look for
/// `ExpiredToken`. Anything else streams through untouched.
async fn look_at_error(
    state: &State,
    route: &'static str,
    resp: Response<Incoming>,
    retried: bool,
) -> Answer {
    let status = resp.status();
    let small_error = (status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST)
        && resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n <= ERROR_PEEK_LIMIT);
    if retried || !small_error {
        let (parts, body) = resp.into_parts();
        return Answer::Pass(respond(parts, body.boxed()));
    }
    let (parts, body) = resp.into_parts();
    let read = tokio::time::timeout(
        state.settings.upstream_timeout,
        Limited::new(body, ERROR_PEEK_LIMIT).collect(),
    );
    let bytes = match read.await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(_)) | Err(_) => {
            return Answer::Pass(plain(
                StatusCode::BAD_GATEWAY,
                "moninit proxy: upstream error body unreadable\n",
            ))
        }
    };
    if super::clock::is_skew_refusal(&bytes)
        && !state
            .skew_logged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        let skew = parts
            .headers
            .get(header::DATE)
            .and_then(|d| super::clock::skew(d, SystemTime::now()));
        tracing::error!(
            route,
            skew_secs = skew.map(|s| s.round() as i64),
            "upstream refused the signature's time: {} (logged once)",
            super::clock::advice(skew)
        );
    }
    if bytes.windows(12).any(|w| w == b"ExpiredToken") {
        tracing::warn!(
            route,
            "upstream says the credentials expired; refreshing and retrying once"
        );
        return Answer::Expired(parts, bytes);
    }
    Answer::Pass(respond(parts, full(bytes)))
}

fn respond(mut parts: http::response::Parts, body: Body) -> Response<Body> {
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}

fn sign_headers(
    state: &State,
    method: &http::Method,
    uri: &str,
    headers: &HeaderMap,
    sha256: &str,
    body: &Chunks,
    credentials: &aws_credential_types::Credentials,
) -> Result<HeaderMap, sign::Error> {
    const SIGNED: [HeaderName; 3] = [header::HOST, header::CONTENT_TYPE, header::CONTENT_ENCODING];
    let to_sign = SIGNED
        .iter()
        .filter_map(|name| Some((name.as_str(), headers.get(name)?.to_str().ok()?)));
    let payload = if state.settings.unsigned_payload {
        Payload::Unsigned
    } else {
        Payload::Sha256(sha256)
    };
    let added = state.settings.signer.sign(
        method.as_str(),
        uri,
        to_sign,
        payload,
        credentials,
        SystemTime::now(),
    )?;
    let mut out = headers.clone();
    for (name, value) in added {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            out.insert(n, v);
        }
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(out)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// The request headers sent upstream before signing: hop-by-hop, `Authorization`,
/// `X-Amz-*`, `Expect`, length and host dropped; `host` set to the signed host.
fn forwarded_headers(incoming: &HeaderMap, strip: &[HeaderName], host: &str) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    let amz: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-amz-"))
        .cloned()
        .collect();
    for name in amz.iter().chain(strip) {
        headers.remove(name);
    }
    for name in [
        header::AUTHORIZATION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, v);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_never_pass() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "AWS4-HMAC-SHA256 Credential=evil"),
            ("x-amz-security-token", "stolen"),
            ("x-amz-date", "20200101T000000Z"),
            ("connection", "close, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "attacker.example"),
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
            ("x-strip-me", "1"),
        ] {
            h.append(
                HeaderName::try_from(k).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        let out = forwarded_headers(
            &h,
            &[HeaderName::from_static("x-strip-me")],
            "aps.example:443",
        );
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-encoding",
                "content-type",
                "host",
                "x-prometheus-remote-write-version"
            ]
        );
        assert_eq!(out["host"], "aps.example:443");
    }
}
