//! Integration tests: the real `cairn` binary (assert_cmd) and the library, on real
//! repositories in temporary directories.

mod common;

mod backend;
mod backup;
mod cache;
mod check;
mod concurrency;
mod copy;
mod decoders;
mod deis;
mod errors;
mod etcd;
mod hooks;
mod k8s;
mod keys;
mod mount;
mod nexus;
mod postgres;
mod profiles;
mod repair;
mod restore;
mod retention;
mod roundtrip;
mod s3;
