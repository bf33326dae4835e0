//! Layers: directory trees under `layers/<name>/` that become part of the overlay.
//!
//! A layer is copied file by file with these rules:
//! - `layer.yaml` describes the layer (its packages, special file modes) and is not copied;
//! - a file ending in `.j2` is a minijinja template rendered with the site's
//!   [`SiteContext`] in the strict environment of [`crate::template`], and written without
//!   the suffix; a template that renders to nothing but white space is left out
//!   (optional configuration, such as ACME settings for a site without ACME);
//! - a path segment `[domain]` repeats the entry once per mail domain of the site, with the
//!   template variable `domain` bound to that domain;
//! - symlinks are kept as symlinks (that is how systemd units are enabled);
//! - files are mode 0644, or 0755 when executable in the layer, unless `layer.yaml` says
//!   otherwise; everything belongs to root.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use minijinja::{Environment, Value};
use serde::Deserialize;

use super::tree::{Content, Entry, Origin};
use crate::template::SiteContext;
use crate::template::context::DomainContext;

const DESCRIPTOR: &str = "layer.yaml";
const TEMPLATE_SUFFIX: &str = ".j2";
const PER_DOMAIN: &str = "[domain]";

/// What `layer.yaml` says.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    #[serde(default)]
    pub description: String,
    /// Pinned packages (by name, from the lock file) whose payload this layer needs.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Octal modes for output paths that need something other than 0644/0755.
    #[serde(default)]
    pub modes: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub name: String,
    /// How messages name the layer's directory.
    pub dir: PathBuf,
    pub spec: LayerSpec,
    /// Its files and symlinks (not `layer.yaml`), by path relative to the layer.
    entries: Vec<(String, SourceContent)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot read layer directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Spec { path: PathBuf, message: String },
    #[error("template {}: {source:#}", path.display())]
    Template {
        path: PathBuf,
        source: minijinja::Error,
    },
    #[error("{}: mode `{mode}` for `{target}` is not an octal file mode such as \"0600\"", path.display())]
    Mode {
        path: PathBuf,
        target: String,
        mode: String,
    },
    #[error("{}: `modes` names `{target}`, which the layer does not produce; fix the path", path.display())]
    UnusedMode { path: PathBuf, target: String },
    #[error("{}: file names must be UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("{}: a template (.j2) must be UTF-8 text", path.display())]
    NotUtf8Template { path: PathBuf },
    #[error("{}: only files, directories and symlinks can be in a layer", path.display())]
    Special { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a layers directory holds, read once: every file and symlink, wherever it came from
/// (a directory named by `--layers`, or the copy built into mailbake: [`crate::shipped`]).
#[derive(Clone, Debug)]
pub struct LayersTree {
    /// How messages name the tree's root.
    root: PathBuf,
    /// Sorted by path.
    entries: Vec<SourceEntry>,
}

/// One file or symlink of a [`LayersTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// Relative to the tree's root, `/`-separated, e.g. `chasquid/layer.yaml`.
    pub path: String,
    pub content: SourceContent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceContent {
    File {
        executable: bool,
        data: Cow<'static, [u8]>,
    },
    /// Kept as a link: layers enable units with links into the target system.
    Symlink(String),
}

impl LayersTree {
    /// A tree from its entries; `root` is how messages name it.
    pub fn new(root: PathBuf, mut entries: Vec<SourceEntry>) -> LayersTree {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        LayersTree { root, entries }
    }

    /// Reads every file and symlink below `root` (symlinks are not followed).
    pub fn read_dir(root: &Path) -> Result<LayersTree, LayerError> {
        let mut entries = Vec::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            for child in sorted_children(&dir)? {
                let name = file_name(&child)?;
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = fs::symlink_metadata(&child).map_err(io(&child))?;
                let content = if meta.is_dir() {
                    stack.push((child, child_rel));
                    continue;
                } else if meta.file_type().is_symlink() {
                    let target = fs::read_link(&child).map_err(io(&child))?;
                    let target = target.to_str().ok_or_else(|| LayerError::NotUtf8 {
                        path: child.clone(),
                    })?;
                    SourceContent::Symlink(target.to_string())
                } else if meta.is_file() {
                    SourceContent::File {
                        executable: meta.permissions().mode() & 0o111 != 0,
                        data: Cow::Owned(fs::read(&child).map_err(io(&child))?),
                    }
                } else {
                    return Err(LayerError::Special { path: child });
                };
                entries.push(SourceEntry {
                    path: child_rel,
                    content,
                });
            }
        }
        Ok(LayersTree::new(root.to_path_buf(), entries))
    }

    /// How messages name the tree: the directory, or the built-in copy.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entries(&self) -> &[SourceEntry] {
        &self.entries
    }
}

/// Every layer of `tree` (its top-level directories), in name order.
pub fn discover(tree: &LayersTree) -> Result<Vec<Layer>, LayerError> {
    let mut layers: Vec<Layer> = Vec::new();
    for entry in &tree.entries {
        // Files at the top of the tree belong to no layer.
        let Some((name, rel)) = entry.path.split_once('/') else {
            continue;
        };
        if layers.last().is_none_or(|l| l.name != name) {
            layers.push(Layer {
                name: name.to_string(),
                dir: tree.root.join(name),
                spec: LayerSpec::default(),
                entries: Vec::new(),
            });
        }
        let layer = layers.last_mut().expect("pushed above");
        if rel == DESCRIPTOR {
            let descriptor = layer.dir.join(DESCRIPTOR);
            let SourceContent::File { data, .. } = &entry.content else {
                return Err(LayerError::Spec {
                    path: descriptor,
                    message: "must be a file, not a symlink".into(),
                });
            };
            layer.spec = serde_norway::from_slice(data).map_err(|e| LayerError::Spec {
                path: descriptor,
                message: e.to_string(),
            })?;
        } else {
            layer.entries.push((rel.to_string(), entry.content.clone()));
        }
    }
    layers.sort_by(|a, b| a.name.cmp(&b.name));
    if layers.is_empty() {
        return Err(LayerError::Spec {
            path: tree.root.clone(),
            message: "no layers found; point --layers at a directory of layers (or leave it out to use the ones built into mailbake)".into(),
        });
    }
    Ok(layers)
}

fn sorted_children(dir: &Path) -> Result<Vec<PathBuf>, LayerError> {
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    children.sort();
    Ok(children)
}

fn file_name(path: &Path) -> Result<String, LayerError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| LayerError::NotUtf8 {
            path: path.to_path_buf(),
        })
}

/// Renders `layer` for the site described by `context`, in `env` (the strict environment of
/// [`crate::template::environment`]); returns the output paths and entries in path order.
pub fn render(
    layer: &Layer,
    context: &SiteContext,
    env: &Environment<'_>,
) -> Result<Vec<(String, Entry)>, LayerError> {
    let origin = Origin::Layer(layer.name.clone());
    let mut out = Vec::new();
    for (rel, source) in &layer.entries {
        let at = layer.dir.join(rel);
        for (path, domain) in instances(rel, &context.domains) {
            let Some((path, content, mode)) =
                render_entry(&at, source, &path, domain, context, env)?
            else {
                continue;
            };
            out.push((
                path,
                Entry {
                    content,
                    mode,
                    uid: 0,
                    gid: 0,
                    origin: origin.clone(),
                },
            ));
        }
    }
    apply_modes(layer, &mut out)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The output paths of the layer entry at `rel`: one per mail domain, with the domain bound,
/// when a path segment is `[domain]`; else just `rel`.
fn instances<'d>(
    rel: &str,
    domains: &'d [DomainContext],
) -> Vec<(String, Option<&'d DomainContext>)> {
    if !rel.split('/').any(|s| s == PER_DOMAIN) {
        return vec![(rel.to_string(), None)];
    }
    domains
        .iter()
        .map(|d| {
            let path = rel
                .split('/')
                .map(|s| if s == PER_DOMAIN { d.name.as_str() } else { s })
                .collect::<Vec<_>>()
                .join("/");
            (path, Some(d))
        })
        .collect()
}

/// One output entry: a symlink as it is, a plain file copied, a template rendered (and left
/// out when it renders to nothing but white space). Returns the path, content and mode.
/// `at` names the source in messages.
fn render_entry(
    at: &Path,
    source: &SourceContent,
    path: &str,
    domain: Option<&DomainContext>,
    context: &SiteContext,
    env: &Environment<'_>,
) -> Result<Option<(String, Content, u32)>, LayerError> {
    let (data, executable) = match source {
        SourceContent::Symlink(target) => {
            return Ok(Some((
                path.to_string(),
                Content::Symlink(target.clone()),
                0o777,
            )));
        }
        SourceContent::File { data, executable } => (data, *executable),
    };
    let mode = if executable { 0o755 } else { 0o644 };
    let Some(stem) = path.strip_suffix(TEMPLATE_SUFFIX) else {
        return Ok(Some((path.to_string(), Content::File(data.to_vec()), mode)));
    };
    let text = std::str::from_utf8(data).map_err(|_| LayerError::NotUtf8Template {
        path: at.to_path_buf(),
    })?;
    let template_error = |error| LayerError::Template {
        path: at.to_path_buf(),
        source: error,
    };
    let rendered = match domain {
        Some(domain) => env.render_str(
            text,
            minijinja::context! { domain => domain, ..Value::from_serialize(context) },
        ),
        None => env.render_str(text, context),
    }
    .map_err(template_error)?;
    Ok((!rendered.trim().is_empty())
        .then(|| (stem.to_string(), Content::File(rendered.into_bytes()), mode)))
}

fn apply_modes(layer: &Layer, entries: &mut [(String, Entry)]) -> Result<(), LayerError> {
    let descriptor = layer.dir.join(DESCRIPTOR);
    for (target, mode_text) in &layer.spec.modes {
        let mode = u32::from_str_radix(mode_text, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| LayerError::Mode {
                path: descriptor.clone(),
                target: target.clone(),
                mode: mode_text.clone(),
            })?;
        let entry = entries
            .iter_mut()
            .find(|(p, _)| p == target)
            .ok_or_else(|| LayerError::UnusedMode {
                path: descriptor.clone(),
                target: target.clone(),
            })?;
        entry.1.mode = mode;
    }
    Ok(())
}
