//! The overlay stage: the site's layers rendered over the payload of the pinned packages,
//! written as one reproducible tar that every host of the site shares. It never contains a
//! secret: users, keys and credentials reach hosts through their seeds.

pub mod acme_ca;
pub mod archive;
pub mod context;
pub mod escape;
pub mod layers;
pub mod mail_policy;
pub mod tree;

use std::path::Path;

use crate::site::Site;
use tree::{Entry, OnExisting, Tree, TreeError};

/// The files of one pinned package, as they go into the overlay.
#[derive(Clone, Debug)]
pub struct PackagePayload {
    pub name: String,
    pub version: String,
    pub entries: Vec<(String, Entry)>,
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error(transparent)]
    Layer(#[from] layers::LayerError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(
        "layer `{layer}` needs package `{package}`, which is not in the lock file; add it there (name, version, architecture, sha256)"
    )]
    MissingPackage { layer: String, package: String },
    #[error(transparent)]
    AcmeCa(#[from] acme_ca::AcmeCaError),
}

/// Builds the overlay tree for `site` from the layers under `layers_dir`; `site_dir` is where
/// the site file's relative paths (ACME CA certificates) are resolved.
pub fn build(
    site: &Site,
    site_dir: &Path,
    layers_dir: &Path,
    packages: &[PackagePayload],
) -> Result<Tree, OverlayError> {
    let layers = layers::discover(layers_dir)?;
    let mut tree = Tree::default();

    // Package payloads first, in lock order, so that layers can replace their sample files.
    let mut wanted: Vec<&PackagePayload> = Vec::new();
    for layer in &layers {
        for name in &layer.spec.packages {
            let payload = packages.iter().find(|p| &p.name == name).ok_or_else(|| {
                OverlayError::MissingPackage {
                    layer: layer.name.clone(),
                    package: name.clone(),
                }
            })?;
            if !wanted.iter().any(|p| p.name == payload.name) {
                wanted.push(payload);
            }
        }
    }
    for payload in wanted {
        for (path, entry) in &payload.entries {
            tree.insert(path, entry.clone(), OnExisting::Replace)?;
        }
    }

    let context = context::for_site(site, acme_ca::bundle(site, site_dir)?.as_deref());
    for layer in &layers {
        for (path, entry) in layers::render(layer, &context)? {
            // A layer replaces package files, never another layer's.
            let from_package = tree
                .get(&path)
                .is_some_and(|e| e.origin.starts_with("package "));
            let rule = if from_package {
                OnExisting::Replace
            } else {
                OnExisting::Refuse
            };
            tree.insert(&path, entry, rule)?;
        }
    }
    Ok(tree)
}
