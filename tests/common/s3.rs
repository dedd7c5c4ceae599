//! A real S3 server in the test process: `s3s-fs` (file-backed, SigV4-checking) on
//! 127.0.0.1, with three keys and fault injection.
//!
//! Keys: `cairn-full` may do everything; `cairn-readonly` may not write or delete;
//! `cairn-nodelete` may not delete (a backup host's key). Faults: answer every Nth
//! request with 503 SlowDown, or close every Nth connection on accept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const BUCKET: &str = "bucket";
pub const SECRET: &str = "cairn-test-secret-key";

#[derive(Debug, Default)]
pub struct Faults {
    /// Answer every Nth request with 503 SlowDown (0: never).
    pub fail_every: AtomicU32,
    /// Close every Nth accepted connection at once (0: never).
    pub reset_every: AtomicU32,
    requests: AtomicU64,
    connections: AtomicU64,
    /// Requests answered with an injected 503.
    pub injected: AtomicU64,
}

struct Policy;

#[async_trait::async_trait]
impl S3Access for Policy {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        let Some(c) = cx.credentials() else {
            return Err(s3s::s3_error!(AccessDenied, "anonymous"));
        };
        let op = cx.s3_op().name();
        let writes = op.starts_with("Put")
            || op.starts_with("Delete")
            || op.contains("Multipart")
            || op == "UploadPart"
            || op == "CopyObject"
            || op == "CreateBucket";
        let deletes = op.starts_with("Delete");
        match c.access_key.as_str() {
            "cairn-readonly" if writes => Err(s3s::s3_error!(AccessDenied, "read-only key")),
            "cairn-nodelete" if deletes => {
                Err(s3s::s3_error!(AccessDenied, "this key may not delete"))
            }
            _ => Ok(()),
        }
    }
}

pub struct S3Server {
    pub port: u16,
    pub root: PathBuf,
    pub faults: Arc<Faults>,
    rt: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    /// Start on a free port, serving `root` (the bucket is `root/bucket`).
    pub fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut s = S3Server {
            port: 0,
            root: root.to_path_buf(),
            faults: Arc::new(Faults::default()),
            rt: None,
        };
        s.run(0);
        s
    }

    fn run(&mut self, port: u16) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("bind the S3 test server");
        self.port = listener.local_addr().unwrap().port();
        let fs = s3s_fs::FileSystem::new(&self.root).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        let mut auth = SimpleAuth::new();
        for k in ["cairn-full", "cairn-readonly", "cairn-nodelete"] {
            auth.register(k.into(), SECRET.into());
        }
        b.set_auth(auth);
        b.set_access(Policy);
        let service = b.build();
        let faults = self.faults.clone();
        rt.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let n = faults.connections.fetch_add(1, Ordering::Relaxed) + 1;
                let every = faults.reset_every.load(Ordering::Relaxed) as u64;
                if every > 0 && n % every == 0 {
                    drop(socket);
                    continue;
                }
                let service = service.clone();
                let faults = faults.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let faults = faults.clone();
                        async move {
                            let n = faults.requests.fetch_add(1, Ordering::Relaxed) + 1;
                            let every = faults.fail_every.load(Ordering::Relaxed) as u64;
                            if every > 0 && n % every == 0 {
                                faults.injected.fetch_add(1, Ordering::Relaxed);
                                let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>";
                                let resp = http::Response::builder()
                                    .status(503)
                                    .header("content-type", "application/xml")
                                    .body(s3s::Body::from(body.to_string()))
                                    .unwrap();
                                return Ok::<_, s3s::HttpError>(resp);
                            }
                            hyper::service::Service::call(&service, req).await
                        }
                    });
                    let conn = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = conn
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        self.rt = Some(rt);
    }

    /// Stop serving: the listener and every connection are dropped.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Serve again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        for _ in 0..50 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                std::net::TcpListener::bind(("127.0.0.1", port)).map(drop)
            }));
            if matches!(r, Ok(Ok(()))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.run(port);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A repository URL under a prefix of the test bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3:{}/{BUCKET}/{prefix}", self.endpoint())
    }

    /// Library options with a key and short retries.
    pub fn options(&self, key: &str) -> cairn::backend::S3Options {
        cairn::backend::S3Options {
            access_key_id: Some(key.into()),
            secret_access_key: Some(SECRET.into()),
            retries: 3,
            retry_timeout: std::time::Duration::from_secs(10),
            ..cairn::backend::S3Options::with_defaults()
        }
    }

    /// Stored files under the bucket's `prefix/folder`.
    pub fn files(&self, prefix: &str, folder: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.join(BUCKET).join(prefix).join(folder)];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else {
                        out.push(p);
                    }
                }
            }
        }
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
