//! Credentials for signing: the standard AWS chain (environment, profile, web identity, ECS,
//! IMDSv2 role), optionally through AssumeRole, cached and refreshed ahead of expiry.
//!
//! Invariants:
//! - requests never wait on a refresh while the cached credentials are still good for longer
//!   than the refresh-ahead window (the fast path is one read lock);
//! - one refresh at a time: concurrent requests that find the credentials stale wait for the
//!   same refresh instead of stampeding IMDS or STS;
//! - a failed refresh keeps serving the old credentials until they actually expire, and is
//!   counted (`moninit_proxy_credential_refresh_failures_total`);
//! - `force_refresh` (after an `ExpiredToken` answer) refreshes only if nobody else already
//!   replaced the credentials that failed.

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use crate::admin::metrics::Proxy as Metrics;

/// After a failed refresh, the next attempt waits this long (or until expiry, if sooner).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Refresh this long before expiry, or at half the lifetime for short-lived credentials.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("no AWS credentials: {0}")]
pub struct Error(String);

#[derive(Clone)]
struct Cached {
    credentials: Credentials,
    refresh_at: Option<SystemTime>,
}

pub struct Cache {
    provider: SharedCredentialsProvider,
    current: RwLock<Option<Cached>>,
    refreshing: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

/// Options for AssumeRole on top of the standard chain.
#[derive(Clone, Debug, Default)]
pub struct AssumeRole {
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
}

/// The standard chain for `region`, wrapped in AssumeRole when a role is given.
pub async fn provider(
    region: &str,
    assume: &AssumeRole,
) -> Result<SharedCredentialsProvider, Error> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .load()
        .await;
    let Some(role_arn) = &assume.role_arn else {
        return sdk
            .credentials_provider()
            .ok_or_else(|| Error("the AWS credential chain is empty".into()));
    };
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(role_arn).session_name(
        assume
            .session_name
            .clone()
            .unwrap_or_else(|| "moninit-proxy".into()),
    );
    if let Some(id) = &assume.external_id {
        builder = builder.external_id(id);
    }
    Ok(SharedCredentialsProvider::new(
        builder.configure(&sdk).build().await,
    ))
}

impl Cache {
    pub fn new(provider: SharedCredentialsProvider, metrics: Metrics) -> Self {
        Cache {
            provider,
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// Credentials good for at least the refresh-ahead window, refreshing if needed.
    pub async fn get(&self) -> Result<Credentials, Error> {
        let now = SystemTime::now();
        if let Some(c) = self.fresh(now) {
            return Ok(c);
        }
        let _guard = self.refreshing.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(c) = self.fresh(SystemTime::now()) {
            return Ok(c);
        }
        self.refresh().await
    }

    /// Refreshes because `failed` was rejected as expired, unless already replaced.
    pub async fn force_refresh(&self, failed: &Credentials) -> Result<Credentials, Error> {
        let _guard = self.refreshing.lock().await;
        if let Some(c) = self.read() {
            if c.credentials.access_key_id() != failed.access_key_id()
                || c.credentials.session_token() != failed.session_token()
            {
                return Ok(c.credentials);
            }
        }
        self.refresh().await
    }

    fn read(&self) -> Option<Cached> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fresh(&self, now: SystemTime) -> Option<Credentials> {
        let c = self.read()?;
        match c.refresh_at {
            Some(at) if now >= at => None,
            _ => Some(c.credentials),
        }
    }

    async fn refresh(&self) -> Result<Credentials, Error> {
        match self.provider.provide_credentials().await {
            Ok(credentials) => {
                let now = SystemTime::now();
                let refresh_at = credentials.expiry().map(|exp| {
                    let lifetime = exp.duration_since(now).unwrap_or_default();
                    exp - REFRESH_AHEAD.min(lifetime / 2)
                });
                self.metrics.credential_expiry(credentials.expiry());
                tracing::debug!(
                    access_key_id = %credentials.access_key_id(),
                    expires_in_s = credentials.expiry().and_then(|e| e.duration_since(now).ok()).map(|d| d.as_secs()),
                    "signing credentials refreshed"
                );
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
                    credentials: credentials.clone(),
                    refresh_at,
                });
                Ok(credentials)
            }
            Err(e) => {
                self.metrics.credential_refresh_failed();
                let why = crate::source::chain(&e);
                // Still usable until it actually expires.
                if let Some(c) = self.read() {
                    if c.credentials
                        .expiry()
                        .is_none_or(|exp| exp > SystemTime::now())
                    {
                        tracing::warn!(error = %why, "credential refresh failed; using the current credentials until they expire");
                        // Try again in a while, not on every request: requests keep
                        // signing with the current credentials meanwhile.
                        let retry_at = SystemTime::now() + RETRY_AFTER_FAILURE;
                        let refresh_at = c
                            .credentials
                            .expiry()
                            .map_or(retry_at, |exp| retry_at.min(exp));
                        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
                            credentials: c.credentials.clone(),
                            refresh_at: Some(refresh_at),
                        });
                        return Ok(c.credentials);
                    }
                }
                Err(Error(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Debug, Clone)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let creds = Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                Some(SystemTime::now() + self.lifetime),
                "test",
            );
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(creds))
        }
    }

    fn cache(lifetime: Duration) -> (Cache, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            lifetime,
        });
        (Cache::new(provider, Metrics::new()), calls)
    }

    #[tokio::test]
    async fn cached_until_the_refresh_window_and_one_refresh_for_many_callers() {
        let (cache, calls) = cache(Duration::from_secs(3600));
        let cache = Arc::new(cache);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.get().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().access_key_id(), "AKID0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn short_lived_credentials_refresh_at_half_their_lifetime() {
        let (cache, calls) = cache(Duration::from_millis(200));
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID0");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn forced_refresh_happens_once_per_failed_credential() {
        let (cache, calls) = cache(Duration::from_secs(3600));
        let first = cache.get().await.unwrap();
        let second = cache.force_refresh(&first).await.unwrap();
        assert_eq!(second.access_key_id(), "AKID1");
        // A second request that failed with the same old credentials reuses the new ones.
        assert_eq!(
            cache.force_refresh(&first).await.unwrap().access_key_id(),
            "AKID1"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
