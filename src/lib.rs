//! mailbake: bake a reproducible chasquid mail server image, per-host cloud-init seeds and
//! DNS records from one site file.
//!
//! Each module is one pipeline stage; the [`site::Site`] model is the only thing they share.

pub mod boot;
pub mod build;
pub mod dns;
pub mod fetch;
pub mod image;
pub mod init;
pub mod output;
pub mod overlay;
pub mod secrets;
pub mod seed;
pub mod site;
pub mod workdir;

/// Where mailbake finds the files it ships (`layers/`, `packages.lock`): `$MAILBAKE_DATA_DIR`,
/// else the source tree it was built from.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var_os("MAILBAKE_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
