//! A file-backed S3 server (s3s-fs) on 127.0.0.1 for benchmarks against S3:
//!
//!   cargo run --release --example s3_server -- ROOT PORT ACCESS_KEY SECRET_KEY
//!
//! Buckets are directories under ROOT. It checks SigV4 signatures; it is a test peer,
//! not a production server.

use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, port, access, secret] = args.as_slice() else {
        eprintln!("usage: s3_server ROOT PORT ACCESS_KEY SECRET_KEY");
        std::process::exit(2);
    };
    std::fs::create_dir_all(root)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| format!("{e:?}"))?;
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(access.clone(), secret.clone()));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
        eprintln!("s3_server: http://{}", listener.local_addr()?);
        loop {
            let (socket, _) = listener.accept().await?;
            let service = service.clone();
            tokio::spawn(async move {
                let conn = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = conn
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    })
}
