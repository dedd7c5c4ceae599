//! S3 and S3-compatible stores (MinIO, Ceph RGW, Garage) through `object_store`.
//!
//! Repository URLs: `s3://BUCKET/PREFIX` (endpoint from `--s3-endpoint` or
//! `AWS_ENDPOINT_URL`, else AWS), or restic's form `s3:http://HOST:PORT/BUCKET/PREFIX`
//! (`s3:https://…`, or `s3:HOST/BUCKET/PREFIX` for HTTPS). A custom endpoint uses
//! path-style requests unless `--s3-virtual-hosted` is given.
//!
//! Credentials: `--s3-access-key-id` with `--s3-secret-access-key-file`, else the
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` variables, else
//! the profile (`--s3-profile`, `AWS_PROFILE`, default `default`) in
//! `~/.aws/credentials`. Secrets are never part of a location string, log or error.
//!
//! Requests are retried by `object_store` (5xx, 429 SlowDown, connection errors; never
//! other 4xx) with exponential backoff and jitter, bounded by `retries` and
//! `retry_timeout`. Every request and every failed attempt is counted ([`RequestStats`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::AmazonS3Builder;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::ObjectStoreBackend;
use crate::error::{Error, Result};

/// Settings of an S3 repository (not stored in the repository).
#[derive(Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Virtual-hosted-style requests instead of path-style.
    pub virtual_hosted: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub profile: Option<String>,
    /// Retries of a failed request (0: none).
    pub retries: usize,
    /// Give up retrying a request after this long.
    pub retry_timeout: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Size of the parts of a multipart upload; packs over twice this go up in parts.
    pub part_size: u64,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("virtual_hosted", &self.virtual_hosted)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("retries", &self.retries)
            .finish()
    }
}

impl S3Options {
    /// Defaults for a MinIO or AWS endpoint: 5 retries within 60 s, 5 minute request
    /// timeout (a 16 MiB pack over a slow link), 10 s to connect.
    pub fn with_defaults() -> Self {
        S3Options {
            retries: 5,
            retry_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            part_size: DEFAULT_PART_SIZE,
            ..Default::default()
        }
    }
}

/// Parts of 16 MiB: a default pack (16 MiB) goes up in one request, and a pack made
/// larger with `init --pack-size` in parts of this size, two at a time.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Requests sent, for reports and benchmarks.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub other: AtomicU64,
    /// Attempts that failed with a 5xx, 429 or a transport error (retried while the
    /// retry budget lasts).
    pub failed_attempts: AtomicU64,
}

/// A parsed S3 repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub prefix: String,
}

/// Parse `s3://bucket/prefix` or `s3:http(s)://host[:port]/bucket/prefix` or
/// `s3:host/bucket/prefix`.
pub fn parse_url(url: &str) -> Result<S3Url> {
    let bad = |why: &str| {
        Error::Config(format!(
            "repository URL '{url}': {why}; use s3://BUCKET/PREFIX or s3:http://HOST:PORT/BUCKET/PREFIX"
        ))
    };
    let (endpoint, rest) = if let Some(r) = url.strip_prefix("s3://") {
        (None, r)
    } else if let Some(r) = url.strip_prefix("s3:") {
        let (scheme, r) = if let Some(x) = r.strip_prefix("http://") {
            ("http", x)
        } else if let Some(x) = r.strip_prefix("https://") {
            ("https", x)
        } else {
            ("https", r)
        };
        let (host, r) = r.split_once('/').ok_or_else(|| bad("no bucket"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        (Some(format!("{scheme}://{host}")), r)
    } else {
        return Err(bad("not an S3 URL"));
    };
    let rest = rest.trim_matches('/');
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("no bucket"));
    }
    Ok(S3Url {
        endpoint,
        bucket: bucket.to_string(),
        prefix: prefix.trim_matches('/').to_string(),
    })
}

/// Read `aws_access_key_id` / `aws_secret_access_key` / `aws_session_token` of a profile
/// from an AWS credentials file (INI).
fn profile_credentials(profile: &str) -> Option<(String, String, Option<String>)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let (mut in_section, mut id, mut secret, mut token) = (false, None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == profile;
        } else if in_section {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().to_string();
                match k.trim() {
                    "aws_access_key_id" => id = Some(v),
                    "aws_secret_access_key" => secret = Some(v),
                    "aws_session_token" => token = Some(v),
                    _ => {}
                }
            }
        }
    }
    Some((id?, secret?, token))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

struct Built {
    store: object_store::aws::AmazonS3,
    parsed: S3Url,
    location: String,
    stats: Arc<RequestStats>,
    client_options: ClientOptions,
}

fn build(url: &str, opts: &S3Options) -> Result<Built> {
    let parsed = parse_url(url)?;
    let endpoint = parsed
        .endpoint
        .clone()
        .or_else(|| opts.endpoint.clone())
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"));
    let region = opts
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let (key_id, secret, token) = match (&opts.access_key_id, &opts.secret_access_key) {
        (Some(k), Some(s)) => (k.clone(), s.clone(), opts.session_token.clone()),
        _ => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(k), Some(s)) => (k, s, env("AWS_SESSION_TOKEN")),
            _ => {
                let profile = opts
                    .profile
                    .clone()
                    .or_else(|| env("AWS_PROFILE"))
                    .unwrap_or_else(|| "default".into());
                profile_credentials(&profile).ok_or_else(|| {
                    Error::Config(format!(
                        "{url}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                         or --s3-access-key-id with --s3-secret-access-key-file, or a profile '{profile}' in ~/.aws/credentials"
                    ))
                })?
            }
        },
    };
    let stats = Arc::new(RequestStats::default());
    let allow_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    // allow_http is set inside ClientOptions: a later with_client_options would reset it.
    let client_options = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(opts.timeout)
        .with_connect_timeout(opts.connect_timeout);
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&parsed.bucket)
        .with_region(&region)
        .with_access_key_id(key_id)
        .with_secret_access_key(secret)
        .with_client_options(client_options.clone())
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.0,
            },
            max_retries: opts.retries,
            retry_timeout: opts.retry_timeout,
        })
        .with_http_connector(CountingConnector {
            stats: stats.clone(),
            retries: opts.retries,
            budget: opts.retry_timeout,
        });
    if let Some(t) = token {
        b = b.with_token(t);
    }
    if let Some(e) = &endpoint {
        b = b
            .with_endpoint(e)
            .with_virtual_hosted_style_request(opts.virtual_hosted);
    }
    let store = b
        .build()
        .map_err(|e| Error::Config(format!("{url}: {e}")))?;
    let location = match &parsed.endpoint {
        Some(_) => url.trim_end_matches('/').to_string(),
        None => format!(
            "s3://{}/{}{}",
            parsed.bucket,
            parsed.prefix,
            endpoint.map(|e| format!(" at {e}")).unwrap_or_default()
        ),
    };
    Ok(Built {
        store,
        parsed,
        location,
        stats,
        client_options,
    })
}

/// Open an S3 repository location.
pub fn open(url: &str, opts: &S3Options) -> Result<ObjectStoreBackend> {
    let b = build(url, opts)?;
    let store: Arc<dyn object_store::ObjectStore> = if b.parsed.prefix.is_empty() {
        Arc::new(b.store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(
            b.store,
            b.parsed.prefix.as_str(),
        ))
    };
    if opts.part_size < MIN_PART_SIZE {
        return Err(Error::Config(format!(
            "S3 part size {} bytes is under S3's minimum of 5 MiB",
            opts.part_size
        )));
    }
    let mut backend = ObjectStoreBackend::new(store, b.location);
    backend.requests = Some(b.stats);
    backend.multipart = Some(super::Multipart {
        threshold: 2 * opts.part_size,
        part_size: opts.part_size,
    });
    Ok(backend)
}

/// Create the bucket a repository URL names (`init --create-bucket`). A bucket that
/// already exists and is ours is fine.
pub async fn create_bucket(url: &str, opts: &S3Options) -> Result<()> {
    use object_store::signer::Signer;
    let b = build(url, opts)?;
    let fail = |message: String| Error::Backend {
        location: b.location.clone(),
        message,
    };
    // A presigned PUT on the bucket's root is CreateBucket.
    let signed = b
        .store
        .signed_url(
            http::Method::PUT,
            &object_store::path::Path::from(""),
            Duration::from_secs(300),
        )
        .await
        .map_err(|e| fail(format!("signing CreateBucket: {e}")))?;
    let client = ReqwestConnector::default()
        .connect(&b.client_options)
        .map_err(|e| fail(e.to_string()))?;
    let req = http::Request::builder()
        .method(http::Method::PUT)
        .uri(signed.as_str())
        .body(object_store::client::HttpRequestBody::from(
            bytes::Bytes::new(),
        ))
        .map_err(|e| fail(e.to_string()))?;
    let resp = client
        .execute(req)
        .await
        .map_err(|e| fail(format!("CreateBucket {}: {e}", b.parsed.bucket)))?;
    let status = resp.status();
    if status.is_success() || status == http::StatusCode::CONFLICT {
        return Ok(());
    }
    Err(fail(format!(
        "CreateBucket {} failed: HTTP {status}",
        b.parsed.bucket
    )))
}

/// The HTTP layer under `object_store`: counts requests and failed attempts, and
/// retries transport failures (a reset or closed connection) that `object_store` leaves
/// alone for requests it does not consider idempotent. Every request cairn sends may be
/// sent again: reads and deletes are idempotent, and writes are create-only to names
/// that are content hashes or random, so a repeated write finds its own first copy.
/// Error responses (5xx, 429) are left to `object_store`'s retries.
#[derive(Debug)]
struct CountingConnector {
    stats: Arc<RequestStats>,
    retries: usize,
    budget: Duration,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Counting {
            inner,
            stats: self.stats.clone(),
            retries: self.retries,
            budget: self.budget,
        }))
    }
}

#[derive(Debug)]
struct Counting {
    inner: HttpClient,
    stats: Arc<RequestStats>,
    retries: usize,
    budget: Duration,
}

/// Exponential backoff with full jitter: 100 ms doubling, at most 5 s.
fn backoff(attempt: usize) -> Duration {
    let cap = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(6))
        .min(Duration::from_secs(5));
    cap.mul_f64(rand::random::<f64>())
}

#[async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        let counter = match req.method().as_str() {
            "GET" => &self.stats.gets,
            "PUT" | "POST" => &self.stats.puts,
            _ => &self.stats.other,
        };
        let (parts, body) = req.into_parts();
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let mut again = http::Request::new(body.clone());
            *again.method_mut() = parts.method.clone();
            *again.uri_mut() = parts.uri.clone();
            *again.version_mut() = parts.version;
            *again.headers_mut() = parts.headers.clone();
            *again.extensions_mut() = parts.extensions.clone();
            counter.fetch_add(1, Ordering::Relaxed);
            match self.inner.execute(again).await {
                Ok(resp) => {
                    if resp.status().is_server_error() || resp.status().as_u16() == 429 {
                        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if attempt >= self.retries || started.elapsed() >= self.budget {
                        return Err(e);
                    }
                    attempt += 1;
                    tracing::debug!(
                        "{} {}: {e}; retry {attempt} of {}",
                        parts.method,
                        parts.uri.path(),
                        self.retries
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            parse_url("s3://backups/nexus").unwrap(),
            S3Url {
                endpoint: None,
                bucket: "backups".into(),
                prefix: "nexus".into()
            }
        );
        assert_eq!(
            parse_url("s3:http://127.0.0.1:9000/bucket/a/b/").unwrap(),
            S3Url {
                endpoint: Some("http://127.0.0.1:9000".into()),
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            parse_url("s3:minio.example.com/b").unwrap(),
            S3Url {
                endpoint: Some("https://minio.example.com".into()),
                bucket: "b".into(),
                prefix: "".into()
            }
        );
        assert!(parse_url("s3://").is_err());
        assert!(parse_url("s3:http://host").is_err());
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let o = S3Options {
            secret_access_key: Some("hunter2".into()),
            ..S3Options::with_defaults()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
