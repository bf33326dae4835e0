//! mailbake: bake a reproducible chasquid mail server image, per-host cloud-init seeds and
//! DNS records from one site file.
//!
//! Each module is one pipeline stage; the [`site::Site`] model is the only thing they share.

pub mod boot;
pub mod image;
