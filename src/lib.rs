//! cairn: a deduplicating, encrypted backup repository on local disk or S3/MinIO.
//!
//! Layers, top to bottom (each knows only the one below):
//!
//! * [`ops`]: backup, restore, tree walking;
//! * [`repository`]: keys, config, snapshots, the blob writer and the index cache;
//! * [`format`] with [`chunker`] and [`crypto`]: the blob codec and every on-store type;
//! * [`backend`]: one trait over `object_store`.
//!
//! ```no_run
//! use cairn::{backend, ops, repository::{Repository, RepoOptions, InitOptions}};
//! let store = backend::open("/srv/backup", true, &backend::S3Options::with_defaults())?;
//! let repo = Repository::init(store, b"secret", InitOptions::default(), RepoOptions::default())?
//!     .into_indexed_announced(cairn::format::LockKind::Backup)?;
//! let progress = ops::backup::Progress::default();
//! let done = ops::backup::backup(
//!     &repo,
//!     ops::backup::Source::Paths(vec!["/etc".into()]),
//!     &ops::backup::BackupOptions::default(),
//!     &progress,
//! )?;
//! println!("snapshot {:?}", done.id);
//! # Ok::<(), cairn::Error>(())
//! ```

pub mod backend;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod metrics;
pub mod ops;
pub mod repository;
pub mod util;

pub use error::{Error, Result};
pub use id::{BlobId, Id, IndexId, KeyId, PackId, SnapshotId};
pub use repository::{IndexedRepository, Repository};
