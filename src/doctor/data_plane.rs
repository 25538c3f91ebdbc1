//! AMP's data plane, through the same signing proxy Prometheus and Grafana use (started on a
//! free loopback port for the checks): remote_write permission, query permission, and this
//! host's clock against the `Date` AWS answers with.
//!
//! The remote_write probe sends an **empty** body, signed: AMP checks the signature and the
//! `aps:RemoteWrite` permission first, then decodes the body. So 403 means the permission (or
//! the signature, or the clock) is wrong, and anything AMP says about the body afterwards (400
//! for a body that is not a snappy-compressed WriteRequest, or 2xx) means the write would be
//! accepted. No sample is ever written. The query probe is `vector(1)`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;

use super::report::{grant, Check};
use crate::admin::metrics;
use crate::proxy::{self, clock, Settings};

/// Skew at which the clock check warns, and fails (SigV4 refuses 5 minutes).
pub const SKEW_WARN_SECS: f64 = 60.0;
pub const SKEW_FAIL_SECS: f64 = 240.0;

const TIMEOUT: Duration = Duration::from_secs(30);

struct Answer {
    status: u16,
    /// The `Date` of AMP's answer, and when it arrived.
    date: Option<(http::HeaderValue, SystemTime)>,
    body: String,
    /// The signing proxy answered by itself (AMP unreachable, a timeout, a refusal): its
    /// words, never AMP's.
    from_proxy: bool,
}

/// The three data-plane checks.
pub async fn probe(
    config: &crate::config::Config,
    amp_endpoint: &str,
    region: &str,
    workspace: &str,
    account: &str,
) -> Vec<Check> {
    let names = ["amp remote_write", "amp query", "clock"];
    let settings = match Settings::for_amp(&config.proxy, amp_endpoint, region, workspace) {
        Ok(mut s) => {
            s.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            s
        }
        Err(e) => {
            return names
                .map(|n| Check::fail(n, e.clone(), "fix `amp_endpoint`"))
                .into()
        }
    };
    let proxy = match proxy::Proxy::new(settings, false, metrics::Proxy::new()).await {
        Ok(p) => p,
        Err(e) => {
            return names
                .map(|n| {
                    Check::fail(
                        n,
                        format!("cannot start the signing proxy: {e}"),
                        "fix the credential chain (see `credentials`)",
                    )
                })
                .into()
        }
    };
    let addr = proxy.local_addr().expect("bound");
    let stop = CancellationToken::new();
    let serving = tokio::spawn(proxy.serve(stop.clone()));
    let ws_arn = format!("arn:aws:aps:{region}:{account}:workspace/{workspace}");
    let write = send(
        addr,
        "POST",
        &format!("/workspaces/{workspace}/api/v1/remote_write"),
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ],
    )
    .await;
    let query = send(
        addr,
        "GET",
        &format!("/workspaces/{workspace}/api/v1/query?query=vector%281%29"),
        &[],
    )
    .await;
    stop.cancel();
    let _ = serving.await;

    let write_check = match &write {
        Ok(a) if a.from_proxy => Check::fail(names[0], format!("AMP was not reached: {}", a.body.trim()), "check the network path to the AMP endpoint and `amp_endpoint`"),
        Ok(a) if (200..300).contains(&a.status) || a.status == 400 => Check::pass(
            names[0],
            format!("signed empty write answered HTTP {} (the permission and the signature were accepted; no sample was written)", a.status),
        ),
        Ok(a) => judge(names[0], a, "aps:RemoteWrite", &ws_arn, amp_endpoint),
        Err(e) => Check::fail(names[0], e.clone(), "check the network path to the AMP endpoint"),
    };
    let query_check = match &query {
        Ok(a) if a.from_proxy => Check::fail(
            names[1],
            format!("AMP was not reached: {}", a.body.trim()),
            "check the network path to the AMP endpoint and `amp_endpoint`",
        ),
        Ok(a) if a.status == 200 => Check::pass(names[1], "vector(1) answered HTTP 200"),
        Ok(a) => judge(names[1], a, "aps:QueryMetrics", &ws_arn, amp_endpoint),
        Err(e) => Check::fail(
            names[1],
            e.clone(),
            "check the network path to the AMP endpoint",
        ),
    };
    let date = [&query, &write]
        .into_iter()
        .find_map(|a| a.as_ref().ok()?.date.clone());
    let clock_check = match date.and_then(|(d, at)| clock::skew(&d, at)) {
        None => Check::skip(names[2], "no AWS answer carried a Date to compare with"),
        Some(s) if s.abs() < SKEW_WARN_SECS => {
            Check::pass(names[2], format!("{s:+.0} s from the Date of AMP's answer"))
        }
        Some(s) if s.abs() < SKEW_FAIL_SECS => Check::warn(
            names[2],
            format!("{s:+.0} s from the Date of AMP's answer"),
            clock::advice(Some(s)),
        ),
        Some(s) => Check::fail(
            names[2],
            format!("{s:+.0} s from the Date of AMP's answer"),
            clock::advice(Some(s)),
        ),
    };
    vec![write_check, query_check, clock_check]
}

/// An answer that is not the expected one: what it means and what to change.
fn judge(name: &str, a: &Answer, action: &str, arn: &str, endpoint: &str) -> Check {
    let body: String = a.body.trim().chars().take(300).collect();
    let evidence = format!("HTTP {}: {body}", a.status);
    if clock::is_skew_refusal(a.body.as_bytes()) {
        return Check::fail(
            name,
            evidence,
            "the signature's time is refused: see `clock`",
        );
    }
    match a.status {
        403 if a.body.contains("security token") || a.body.contains("ExpiredToken") => {
            Check::fail(name, evidence, "the credentials are not valid for AWS: see `credentials`")
        }
        403 => Check::fail(name, evidence, grant(action, arn)),
        404 => Check::fail(
            name,
            evidence,
            format!("no such workspace at {endpoint}: check `workspace_id`, `region` and `amp_endpoint`"),
        ),
        _ => Check::fail(name, evidence, "check the network path to the AMP endpoint and AMP's service health"),
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{target}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| crate::source::chain(&e))?;
    let arrived = SystemTime::now();
    let status = resp.status().as_u16();
    let date = resp.headers().get(http::header::DATE).cloned();
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| "the answer's body did not arrive".to_owned())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    // The proxy's own answers start so; hyper dates them with this host's clock.
    let from_proxy = body.starts_with("moninit proxy:");
    Ok(Answer {
        status,
        date: date.filter(|_| !from_proxy).map(|d| (d, arrived)),
        body,
        from_proxy,
    })
}
