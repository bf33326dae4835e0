//! The fleet stage: a Terraform/OpenTofu configuration that runs every host of the site on
//! Contabo from one disk image, with no hand-written HCL.
//!
//! It runs after `image`, because what it writes depends on the image's digest: the image is
//! known by its digest (its URL names it, so a new image is a new URL and, `image_url` being
//! ForceNew, a new `contabo_image`), and each host's user-data names it too. That second part
//! is not decoration: contabo/contabo 0.1.42 reinstalls an instance when `image_id` or
//! `user_data` changes but sends `user_data` only when it changed, so a new image with the
//! same user-data would boot without its seed. With the digest in both, they change together.
//! (The overlay's digest would not do: a new base under the same overlay is a new image.)
//!
//! What it writes, into one directory:
//! - the static module (`terraform/` of the source tree, built in): `main.tf`, `variables.tf`,
//!   `outputs.tf`, the same for every site;
//! - `mailbake.auto.tfvars.json` (0600): the image (name, URL, digest) and, per host, its
//!   display name and its seed's user-data, in the variable `user_data` that the module marks
//!   `sensitive`. The user-data is [`crate::seed`]'s, from the same templates and the same
//!   secrets (read from the store once: no password is hashed again, whatever the number of
//!   hosts), plus one comment line naming the image.

pub mod cli;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::output::OutputFile;
use crate::secrets::SecretStore;
use crate::seed::{self, Material, SeedError};
use crate::site::LoadedSite;
use crate::template::SiteContext;
use crate::template::context::ImageFacts;

/// The static module, by output file name.
pub const MODULE: [(&str, &str); 3] = [
    ("main.tf", include_str!("../../terraform/main.tf")),
    ("variables.tf", include_str!("../../terraform/variables.tf")),
    ("outputs.tf", include_str!("../../terraform/outputs.tf")),
];

/// The variables file; Terraform and OpenTofu load `*.auto.tfvars.json` by themselves.
pub const TFVARS: &str = "mailbake.auto.tfvars.json";

#[derive(Debug, thiserror::Error)]
pub enum TerraformError {
    #[error(
        "--image-base-url {url:?}: {reason}\n  fix: give the http(s) URL of the directory the image will be uploaded to, e.g. https://images.example.com/mailbake/"
    )]
    BadBaseUrl { url: String, reason: String },
    #[error(transparent)]
    Seed(#[from] SeedError),
}

/// The image the fleet runs: its digest and the directory URL it is uploaded to.
#[derive(Clone, Debug)]
pub struct FleetImage {
    pub sha256: String,
    pub base_url: String,
}

impl FleetImage {
    /// Checks `base_url` (it ends up in the user-data and the provider's API calls).
    pub fn new(sha256: String, base_url: &str) -> Result<FleetImage, TerraformError> {
        let bad = |reason: &str| TerraformError::BadBaseUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let rest = base_url
            .strip_prefix("https://")
            .or_else(|| base_url.strip_prefix("http://"))
            .ok_or_else(|| bad("must start with https:// or http://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("has no host name"));
        }
        if base_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '"' | '\\'))
        {
            return Err(bad(
                "holds white space, a control character, a quote, a backslash, `?` or `#`",
            ));
        }
        if let Some(problem) = crate::site::url_problem(base_url, &["https://", "http://"]) {
            // A URL with credentials is not repeated: it would print the password.
            let url = if problem.contains("user information") {
                "(not shown: it holds credentials)".to_string()
            } else {
                base_url.to_string()
            };
            return Err(TerraformError::BadBaseUrl {
                url,
                reason: problem,
            });
        }
        Ok(FleetImage {
            sha256,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The file name to upload the image as: it names the site and the digest.
    pub fn file_name(&self, site: &str) -> String {
        format!("mailbake-{site}-{}.qcow2", self.sha256)
    }

    pub fn url(&self, site: &str) -> String {
        format!("{}/{}", self.base_url, self.file_name(site))
    }
}

/// `mailbake.auto.tfvars.json`: the module's variables that mailbake knows.
#[derive(Debug, Serialize)]
struct TfVars {
    image: ImageVar,
    hosts: BTreeMap<String, HostVar>,
    user_data: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct ImageVar {
    name: String,
    description: String,
    url: String,
    version: String,
}

#[derive(Debug, Serialize)]
struct HostVar {
    display_name: String,
}

/// The module and its variables for every host of the site, to run `image`.
pub fn outputs(
    loaded: &LoadedSite,
    context: &SiteContext,
    store: Option<&SecretStore>,
    image: &FleetImage,
) -> Result<Vec<OutputFile>, TerraformError> {
    let site = loaded.site.site.as_str();
    let facts = ImageFacts {
        sha256: image.sha256.clone(),
        url: image.url(site),
    };
    let material = Material::collect(loaded, store)?;
    let mut hosts = BTreeMap::new();
    let mut user_data = BTreeMap::new();
    for (name, host) in loaded.site.hosts.iter() {
        let mut host_context = seed::host_context(context, name, host, &material);
        host_context.image = Some(facts.clone());
        let files = seed::render(&host_context)?;
        let text = String::from_utf8(files.user_data)
            .expect("rendered from UTF-8 templates and escaped values");
        hosts.insert(
            name.to_string(),
            HostVar {
                display_name: host.fqdn.to_string(),
            },
        );
        user_data.insert(name.to_string(), text);
    }
    let vars = TfVars {
        image: ImageVar {
            name: format!("mailbake-{site}-{}", &image.sha256[..12]),
            description: format!("mailbake image of site {site}"),
            url: facts.url.clone(),
            version: image.sha256.clone(),
        },
        hosts,
        user_data,
    };
    let mut json = serde_json::to_string_pretty(&vars).expect("plain data serializes");
    json.push('\n');
    let mut files: Vec<OutputFile> = MODULE
        .iter()
        .map(|(name, text)| OutputFile::public(*name, text.as_bytes().to_vec()))
        .collect();
    files.push(OutputFile::secret(TFVARS, json.into_bytes()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_image_url_names_the_site_and_the_digest() {
        let image = FleetImage::new(SHA.into(), "https://img.example.com/mb/").unwrap();
        assert_eq!(
            image.url("example"),
            format!("https://img.example.com/mb/mailbake-example-{SHA}.qcow2")
        );
    }

    #[test]
    fn base_urls_that_could_break_out_or_lose_the_file_name_are_refused() {
        for bad in [
            "ftp://x/",
            "https://",
            "https:///path",
            "https://x/a b",
            "https://x/?q=",
            "https://x/#f",
            "https://x/\n",
            "https://x/\"",
            "images.example.com",
            "https://user:pw@images.example.com/",
            "https://bücher.example/",
            "https://-x/",
        ] {
            assert!(FleetImage::new(SHA.into(), bad).is_err(), "{bad:?}");
        }
    }
}
