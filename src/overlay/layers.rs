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
    pub dir: PathBuf,
    pub spec: LayerSpec,
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
    #[error("{}: only files, directories and symlinks can be in a layer", path.display())]
    Special { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Every layer under `root`, in name order.
pub fn discover(root: &Path) -> Result<Vec<Layer>, LayerError> {
    let mut layers = Vec::new();
    for dir in sorted_children(root)? {
        if !dir.is_dir() {
            continue;
        }
        let name = file_name(&dir)?;
        let descriptor = dir.join(DESCRIPTOR);
        let spec = match fs::read_to_string(&descriptor) {
            Ok(text) => serde_norway::from_str(&text).map_err(|e| LayerError::Spec {
                path: descriptor.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LayerSpec::default(),
            Err(e) => return Err(io(&descriptor)(e)),
        };
        layers.push(Layer { name, dir, spec });
    }
    if layers.is_empty() {
        return Err(LayerError::Spec {
            path: root.to_path_buf(),
            message: "no layers found; point --layers at mailbake's layers/ directory".into(),
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
    for (source, rel, meta) in walk(&layer.dir)? {
        for (path, domain) in instances(&rel, &context.domains) {
            let Some((path, content, mode)) =
                render_entry(&source, &meta, &path, domain, context, env)?
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

/// Every entry below `root` that is not a directory (directories come from their contents),
/// with its path relative to `root` and its metadata (not following symlinks); the layer's
/// own `layer.yaml` is left out.
fn walk(root: &Path) -> Result<Vec<(PathBuf, String, fs::Metadata)>, LayerError> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for child in sorted_children(&dir)? {
            let name = file_name(&child)?;
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if child_rel == DESCRIPTOR {
                continue;
            }
            let meta = fs::symlink_metadata(&child).map_err(io(&child))?;
            if meta.is_dir() {
                stack.push((child, child_rel));
            } else {
                out.push((child, child_rel, meta));
            }
        }
    }
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
fn render_entry(
    source: &Path,
    meta: &fs::Metadata,
    path: &str,
    domain: Option<&DomainContext>,
    context: &SiteContext,
    env: &Environment<'_>,
) -> Result<Option<(String, Content, u32)>, LayerError> {
    if meta.file_type().is_symlink() {
        let target = fs::read_link(source).map_err(io(source))?;
        let target = target.to_str().ok_or_else(|| LayerError::NotUtf8 {
            path: source.to_path_buf(),
        })?;
        return Ok(Some((
            path.to_string(),
            Content::Symlink(target.to_string()),
            0o777,
        )));
    }
    if !meta.is_file() {
        return Err(LayerError::Special {
            path: source.to_path_buf(),
        });
    }
    let executable = meta.permissions().mode() & 0o111 != 0;
    let mode = if executable { 0o755 } else { 0o644 };
    let Some(stem) = path.strip_suffix(TEMPLATE_SUFFIX) else {
        let data = fs::read(source).map_err(io(source))?;
        return Ok(Some((path.to_string(), Content::File(data), mode)));
    };
    let text = fs::read_to_string(source).map_err(io(source))?;
    let template_error = |error| LayerError::Template {
        path: source.to_path_buf(),
        source: error,
    };
    let rendered = match domain {
        Some(domain) => env.render_str(
            &text,
            minijinja::context! { domain => domain, ..Value::from_serialize(context) },
        ),
        None => env.render_str(&text, context),
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
