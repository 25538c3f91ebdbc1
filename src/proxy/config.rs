//! The proxy's configuration: the `proxy:` section of the agent config, and [`Settings`], the
//! validated runtime form built from it (embedded mode) or from `moninit proxy`'s flags.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::credentials::AssumeRole;
use super::route::{self, Table};
use super::sign::Signer;

/// The `proxy:` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Loopback port Prometheus' remote_write (and Grafana in proxy mode) connect to.
    pub port: u16,
    /// Largest request body accepted; larger ones get 413 without reaching AWS.
    pub body_limit_bytes: usize,
    /// Requests handled at once; more get 503 with `Retry-After`. With the body limit, this
    /// bounds memory: at most `body_limit_bytes × max_concurrent_requests` of bodies.
    pub max_concurrent_requests: usize,
    /// Seconds a client may take to send its request headers.
    pub header_timeout_secs: u64,
    /// Seconds a client may take to send its request body.
    pub body_timeout_secs: u64,
    /// Seconds a request body may make no progress before the request gets 408.
    pub body_stall_secs: u64,
    /// Average bytes per second a request body must arrive at, after its first 2 s.
    pub body_min_bytes_per_sec: u64,
    /// Seconds to connect (TCP + TLS) to the upstream.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for the upstream's response headers (long PromQL queries included).
    pub upstream_timeout_secs: u64,
    /// Role to assume on top of the standard credential chain.
    pub role_arn: Option<String>,
    /// External id for the AssumeRole call.
    pub external_id: Option<String>,
    /// Session name for the AssumeRole call (default `moninit-proxy`).
    pub session_name: Option<String>,
    /// Sign with `UNSIGNED-PAYLOAD` instead of the body's SHA-256.
    pub unsigned_payload: bool,
    /// Forward only requests for the configured workspace.
    pub only_own_workspace: bool,
}

impl Config {
    /// The port AWS documents for aws-sigv4-proxy in front of AMP, so migrations keep theirs.
    pub const DEFAULT_PORT: u16 = 8005;
    /// Far above Prometheus' largest remote_write batch (a few MiB with metadata).
    pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;
    /// Requests beyond this wait (up to 5 s) for a slot; Prometheus' shards simply queue.
    /// With the body limit this bounds body memory at 2 GiB worst case; real remote_write
    /// batches (1000 samples, tens of KiB compressed) keep it to a few MiB.
    pub const DEFAULT_MAX_CONCURRENT: usize = 128;

    pub fn validate(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err("proxy.port: must be a fixed port (Prometheus' config names it)".into());
        }
        if self.body_limit_bytes == 0 || self.max_concurrent_requests == 0 {
            return Err(
                "proxy: body_limit_bytes and max_concurrent_requests must be positive".into(),
            );
        }
        if [
            self.header_timeout_secs,
            self.body_timeout_secs,
            self.body_stall_secs,
            self.connect_timeout_secs,
            self.upstream_timeout_secs,
        ]
        .contains(&0)
        {
            return Err("proxy: timeouts must be positive".into());
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: Self::DEFAULT_PORT,
            body_limit_bytes: Self::DEFAULT_BODY_LIMIT,
            max_concurrent_requests: Self::DEFAULT_MAX_CONCURRENT,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            body_stall_secs: 5,
            body_min_bytes_per_sec: 16 * 1024,
            connect_timeout_secs: 5,
            upstream_timeout_secs: 120,
            role_arn: None,
            external_id: None,
            session_name: None,
            unsigned_payload: false,
            only_own_workspace: true,
        }
    }
}

/// Where signed requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `https` (or `http` for local stand-ins).
    pub scheme: String,
    /// `host[:port]`, as sent in the Host header and signed.
    pub authority: String,
}

impl Upstream {
    /// Parses `https://host[:port]` (a trailing path is refused: routes carry paths).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("`{url}`: expected scheme://host"))?;
        if scheme != "https" && scheme != "http" {
            return Err(format!("`{url}`: scheme must be https or http"));
        }
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(format!(
                "`{url}`: expected scheme://host[:port] with no path"
            ));
        }
        Ok(Upstream {
            scheme: scheme.to_owned(),
            authority: authority.to_ascii_lowercase(),
        })
    }

    /// The host without its port.
    pub fn host(&self) -> &str {
        if self.authority.starts_with('[') {
            return self
                .authority
                .split_inclusive(']')
                .next()
                .unwrap_or(&self.authority);
        }
        match self.authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.authority,
        }
    }
}

/// The validated runtime settings of one proxy.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub upstream: Upstream,
    /// Host to sign and send instead of the upstream's (aws-sigv4-proxy's `--sign-host`).
    pub sign_host: Option<String>,
    pub signer: Signer,
    pub routes: Table,
    pub body_limit: usize,
    pub max_concurrent: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub body_stall: Duration,
    pub body_min_rate: u64,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub unsigned_payload: bool,
    /// Extra request headers to drop before signing (aws-sigv4-proxy's `--strip`).
    pub strip: Vec<http::HeaderName>,
    pub assume: AssumeRole,
}

impl Settings {
    /// The embedded proxy in front of AMP for `workspace_id` in `region`.
    pub fn for_amp(
        config: &Config,
        amp_endpoint: &str,
        region: &str,
        workspace_id: &str,
    ) -> Result<Self, String> {
        let upstream = Upstream::parse(amp_endpoint).map_err(|e| format!("amp_endpoint: {e}"))?;
        let workspace = config.only_own_workspace.then(|| workspace_id.to_owned());
        let routes = Table::new(route::amp(), workspace, vec![upstream.host().to_owned()]);
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.port);
        let signer = Signer {
            service: "aps".into(),
            region: region.to_owned(),
            content_sha256_header: true,
        };
        Ok(Settings::new(config, listen, upstream, signer, routes))
    }

    /// Settings whose limits, timeouts and credentials come from `config`; no `--sign-host`,
    /// nothing extra stripped.
    pub fn new(
        config: &Config,
        listen: SocketAddr,
        upstream: Upstream,
        signer: Signer,
        routes: Table,
    ) -> Self {
        let secs = Duration::from_secs;
        Settings {
            listen,
            upstream,
            sign_host: None,
            signer,
            routes,
            body_limit: config.body_limit_bytes,
            max_concurrent: config.max_concurrent_requests,
            header_timeout: secs(config.header_timeout_secs),
            body_timeout: secs(config.body_timeout_secs),
            body_stall: secs(config.body_stall_secs),
            body_min_rate: config.body_min_bytes_per_sec,
            connect_timeout: secs(config.connect_timeout_secs),
            upstream_timeout: secs(config.upstream_timeout_secs),
            unsigned_payload: config.unsigned_payload,
            strip: Vec::new(),
            assume: AssumeRole {
                role_arn: config.role_arn.clone(),
                external_id: config.external_id.clone(),
                session_name: config.session_name.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_host_and_port_only() {
        let u = Upstream::parse("https://aps-workspaces.us-east-1.amazonaws.com/").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.authority.as_str(), u.host()),
            (
                "https",
                "aps-workspaces.us-east-1.amazonaws.com",
                "aps-workspaces.us-east-1.amazonaws.com"
            )
        );
        let u = Upstream::parse("http://127.0.0.1:9999").unwrap();
        assert_eq!(u.host(), "127.0.0.1");
        assert!(Upstream::parse("https://h/workspaces").is_err());
        assert!(Upstream::parse("ftp://h").is_err());
        assert!(Upstream::parse("https://user@h").is_err());
    }
}
