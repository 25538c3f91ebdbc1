//! `moninit proxy`: the proxy alone, configured from aws-sigv4-proxy-compatible flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use http::Method;

use super::route::{self, Route, Table};
use super::sign::Signer;
use super::{Config, Settings, Upstream};
use crate::cli::ProxyArgs;

/// `:8005` → 127.0.0.1:8005 (aws-sigv4-proxy would bind every interface); `host:port` as is.
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Some(port) = text.strip_prefix(':') {
        let port = port
            .parse()
            .map_err(|_| format!("--port `{text}`: not a port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse()
        .map_err(|_| format!("--port `{text}`: expected ADDRESS:PORT or :PORT"))
}

/// `GET,PUT:/bucket/**` → a route named `custom`.
fn custom_route(text: &str) -> Result<Route, String> {
    let (methods, pattern) = text
        .split_once(':')
        .ok_or_else(|| format!("--allow-path `{text}`: expected METHODS:PATTERN"))?;
    let methods: Vec<Method> = methods
        .split(',')
        .map(|m| {
            Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("--allow-path `{text}`: bad method `{m}`"))
        })
        .collect::<Result<_, _>>()?;
    if !pattern.starts_with('/') {
        return Err(format!(
            "--allow-path `{text}`: the pattern must start with /"
        ));
    }
    Ok(Route::new("custom", &methods, pattern))
}

/// Validated settings from the command line.
pub fn settings(args: &ProxyArgs) -> Result<Settings, String> {
    let host = match (&args.host, args.name.as_str()) {
        (Some(h), _) => h.clone(),
        (None, "aps") => format!("aps-workspaces.{}.amazonaws.com", args.region),
        (None, other) => return Err(format!("--host is required for service `{other}`")),
    };
    let upstream = Upstream::parse(&format!("{}://{}", args.upstream_url_scheme, host))?;
    let mut routes: Vec<Route> = args
        .allow_path
        .iter()
        .map(|p| custom_route(p))
        .collect::<Result<_, _>>()?;
    if args.name == "aps" {
        routes.extend(route::amp());
    }
    if routes.is_empty() {
        return Err(format!(
            "no routes for service `{}`: give at least one --allow-path METHODS:PATTERN",
            args.name
        ));
    }
    let mut hosts = vec![upstream.host().to_owned()];
    hosts.extend(args.sign_host.iter().cloned());
    let strip = args
        .strip
        .iter()
        .map(|h| {
            http::HeaderName::try_from(h.as_str())
                .map_err(|_| format!("--strip `{h}`: not a header name"))
        })
        .collect::<Result<_, _>>()?;
    let config = Config {
        body_limit_bytes: args.body_limit,
        max_concurrent_requests: args.max_concurrent.max(1),
        role_arn: args.role_arn.clone(),
        external_id: args.external_id.clone(),
        unsigned_payload: args.unsigned_payload,
        ..Config::default()
    };
    let signer = Signer {
        service: args.name.clone(),
        region: args.region.clone(),
        content_sha256_header: true,
    };
    let routes = Table::new(routes, args.workspace.clone(), hosts);
    let mut settings = Settings::new(&config, listen_addr(&args.port)?, upstream, signer, routes);
    settings.sign_host = args.sign_host.clone();
    settings.strip = strip;
    Ok(settings)
}

/// Runs the proxy until SIGINT or SIGTERM.
pub async fn run(args: &ProxyArgs) -> Result<(), super::server::Error> {
    let settings = settings(args).map_err(super::server::Error::Setup)?;
    let metrics = crate::admin::metrics::Proxy::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let shutdown = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = &args.metrics_listen {
        let addr = listen_addr(addr).map_err(super::server::Error::Setup)?;
        // --allow-non-loopback is for the proxy's port only: metrics stay on loopback.
        if !addr.ip().is_loopback() {
            return Err(super::server::Error::MetricsNotLoopback(addr));
        }
        let listener = super::server::bind(addr, false).await?;
        tokio::spawn(crate::admin::serve(
            listener,
            Arc::new(registry),
            None,
            None,
            shutdown.clone(),
        ));
    }
    let upstream = format!(
        "{}://{}",
        settings.upstream.scheme, settings.upstream.authority
    );
    let (service, region) = (
        settings.signer.service.clone(),
        settings.signer.region.clone(),
    );
    let proxy = super::Proxy::new(settings, args.allow_non_loopback, metrics).await?;
    let addr = proxy
        .local_addr()
        .map_err(|e| super::server::Error::Setup(e.to_string()))?;
    tracing::info!(listen = %addr, %upstream, %service, %region, "signing proxy ready");
    let serving = tokio::spawn(proxy.serve(shutdown.clone()));
    crate::signals::terminated().await;
    tracing::info!("stopping: draining in-flight requests");
    shutdown.cancel();
    let _ = serving.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_port_means_loopback() {
        assert_eq!(
            listen_addr(":8005").unwrap(),
            "127.0.0.1:8005".parse().unwrap()
        );
        assert_eq!(
            listen_addr("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert!(listen_addr("8005").is_err());
    }

    #[test]
    fn custom_routes_parse_methods_and_patterns() {
        let r = custom_route("get,PUT:/bucket/**").unwrap();
        assert_eq!(r.methods, vec![Method::GET, Method::PUT]);
        assert!(custom_route("GET /x").is_err());
    }
}
