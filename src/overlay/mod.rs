//! The overlay stage: the site's layers rendered over the payload of the pinned packages,
//! written as one reproducible tar that every host of the site shares. It never contains a
//! secret: users, keys and credentials reach hosts through their seeds.
//!
//! Two steps, so that a build checks every input before its expensive work: [`render`] reads
//! the layers and renders every template with the site's [`SiteContext`] (cheap, and where
//! mistakes are); [`Rendered::assemble`] then lays the packages' payloads down and the
//! rendered layers over them.

pub mod archive;
pub mod layers;
pub mod packages;
pub mod tree;

use crate::template::{self, SiteContext};
use layers::{Layer, LayersTree};
pub use packages::{PackageError, PackagePayload};
use tree::{Entry, OnExisting, Origin, Tree, TreeError};

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
    Package(#[from] PackageError),
}

/// The site's layers, rendered: everything of the overlay but the packages' payloads.
#[derive(Clone, Debug)]
pub struct Rendered {
    layers: Vec<(Layer, Vec<(String, Entry)>)>,
}

/// Renders the layers of `tree` for the site `context` describes.
pub fn render(context: &SiteContext, tree: &LayersTree) -> Result<Rendered, OverlayError> {
    let env = template::environment();
    let layers = layers::discover(tree)?
        .into_iter()
        .map(|layer| {
            let entries = layers::render(&layer, context, &env)?;
            Ok((layer, entries))
        })
        .collect::<Result<_, OverlayError>>()?;
    Ok(Rendered { layers })
}

impl Rendered {
    /// The overlay tree: the payloads of the packages the layers ask for, then the rendered
    /// layers, which may replace package files (our chasquid.conf over the
    /// sample) but never each other's.
    pub fn assemble(&self, packages: &[PackagePayload]) -> Result<Tree, OverlayError> {
        let mut tree = Tree::default();
        for payload in self.wanted_packages(packages)? {
            for (path, entry) in &payload.entries {
                tree.insert(path, entry.clone(), OnExisting::Replace)?;
            }
        }
        for (_, entries) in &self.layers {
            for (path, entry) in entries {
                let from_package = tree
                    .get(path)
                    .is_some_and(|e| matches!(e.origin, Origin::Package { .. }));
                let rule = if from_package {
                    OnExisting::Replace
                } else {
                    OnExisting::Refuse
                };
                tree.insert(path, entry.clone(), rule)?;
            }
        }
        Ok(tree)
    }

    /// The payloads the layers name, each once, in the order the layers first name them.
    fn wanted_packages<'p>(
        &self,
        packages: &'p [PackagePayload],
    ) -> Result<Vec<&'p PackagePayload>, OverlayError> {
        let mut wanted: Vec<&PackagePayload> = Vec::new();
        for (layer, _) in &self.layers {
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
        Ok(wanted)
    }
}
