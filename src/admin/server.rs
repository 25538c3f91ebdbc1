//! A minimal loopback HTTP server for `/metrics`, `/healthz` (moninit alive) and `/readyz`
//! (boot finished and every child ready).

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::supervise::Readiness;

/// Serves until `shutdown` fires. The listener is bound by the caller, so a port already
/// taken fails before anything else starts. `/readyz` answers 200 only when `readiness`
/// (if any) says every child is ready.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Option<Arc<Readiness>>,
    status: Option<Arc<crate::watch::Status>>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "admin endpoint accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let registry = registry.clone();
        let readiness = readiness.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let readiness = readiness.clone();
                let status = status.clone();
                async move {
                    let resp = match req.uri().path() {
                        "/metrics" => Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(metrics::render(&registry)))),
                        "/status" if status.is_some() => Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(
                                status.as_ref().map(|s| s.to_json()).unwrap_or_default(),
                            ))),
                        "/healthz" => {
                            Response::builder().body(Full::new(Bytes::from_static(b"ok\n")))
                        }
                        "/readyz" => match readiness.as_ref().map_or(Ok(()), |r| r.check()) {
                            Ok(()) => {
                                Response::builder().body(Full::new(Bytes::from_static(b"ready\n")))
                            }
                            Err(waiting) => Response::builder()
                                .status(StatusCode::SERVICE_UNAVAILABLE)
                                .body(Full::new(Bytes::from(format!(
                                    "{}: {}\n",
                                    if readiness.as_ref().is_some_and(|r| r.is_booted()) {
                                        "degraded"
                                    } else {
                                        "not ready"
                                    },
                                    waiting.join(", ")
                                )))),
                        },
                        _ => Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::new())),
                    };
                    Ok::<_, http::Error>(resp.expect("static response parts are valid"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
