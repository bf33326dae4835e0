//! The seed stage: per-host cloud-init seeds carrying what the shared image must not: the
//! host's identity (fqdn = PTR name = chasquid's greeting), its network addresses, and the
//! site's secrets (users databases, DKIM keys, TLS key, ACME credentials).
//!
//! The shapes of the three cloud-init files are templates in `cloud-init/` at the top of the
//! source tree, rendered by the same strict engine as `layers/` ([`crate::template`]) with a
//! [`HostContext`]: `layers/` is what every host shares, `cloud-init/` what each host gets.
//! They are built into the binary: they and the code that fills them (and the image's
//! apply-seed, through [`crate::template::SeedFormat`]) form one format and change together.
//!
//! For every host this makes:
//! - `user-data` (`cloud-init/user-data.j2`): `#cloud-config` that also works alone as
//!   provider-API user-data; it stages the secret files ([`files`]) under the stage directory
//!   with a manifest (`cloud-init/manifest.j2`), and the image's `mailbake-apply-seed.service`
//!   installs them atomically and restarts chasquid once;
//! - `network-config` (`cloud-init/network-config.j2`, [`network`]): netplan v2 with the
//!   static IPv6 /64 and IPv4 DHCP or static, for the seed.img path only; user-data itself
//!   carries the same network as a systemd-networkd file (`cloud-init/networkd.j2`) that
//!   takes precedence over whatever a provider's datasource configures, and the addresses the
//!   image's boot checks expect (`cloud-init/host.conf.j2`);
//! - `meta-data` (`cloud-init/meta-data.j2`, [`meta`]): `instance-id` = digest of the two
//!   files above, so a changed seed re-applies at the next boot and an unchanged one is a
//!   no-op;
//! - `seed.img` ([`image`]): a NoCloud vfat volume labelled `cidata` holding the three files,
//!   byte-for-byte reproducible.
//!
//! Everything here is a pure function of the site and the secrets store: no randomness,
//! sorted output, and the clock read once only, so that an expired stored ACME certificate
//! never goes into a seed. The files are secret: [`output_files`] marks them 0600.

pub mod files;
pub mod image;
mod material;
pub mod meta;
pub mod network;

use std::path::PathBuf;

use minijinja::{Environment, Value};

use crate::output::OutputFile;
use crate::secrets::{SecretStore, SecretsError};
use crate::site::{Host, HostName, LoadedSite};
use crate::template::context::{FileContent, HostContext, HostFacts};
use crate::template::{self, SiteContext};

pub use files::StagedFile;
pub use material::{AcmeMaterial, HOST_ACME_STATE, HostCertificate, Material, TlsPair};

/// The cloud-init templates (`cloud-init/`), by the name of the file each one makes.
pub(crate) const TEMPLATES: [(&str, &str); 6] = [
    ("manifest", include_str!("../../cloud-init/manifest.j2")),
    ("networkd", include_str!("../../cloud-init/networkd.j2")),
    ("host.conf", include_str!("../../cloud-init/host.conf.j2")),
    ("user-data", include_str!("../../cloud-init/user-data.j2")),
    (
        "network-config",
        include_str!("../../cloud-init/network-config.j2"),
    ),
    ("meta-data", include_str!("../../cloud-init/meta-data.j2")),
];

/// Why a seed could not be made. Every message names the file or the site entry involved and
/// the command or edit that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("secrets store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: SecretsError,
    },

    #[error(
        "user {local}@{domain} is listed in {site} but has no password hash in {path}\n  fix: `mailbake user add {site} {local}@{domain}`"
    )]
    MissingUser {
        local: String,
        domain: String,
        site: PathBuf,
        path: PathBuf,
    },

    #[error(
        "user {local}@{domain} has a password hash in {path} but is not in {site}'s `domains.{domain}.users`; every seed would let it log in\n  fix: add it to the site file, or `mailbake user remove {site} {local}@{domain}`"
    )]
    UnlistedUser {
        local: String,
        domain: String,
        site: PathBuf,
        path: PathBuf,
    },

    #[error(
        "DKIM selector {selector} of {domain} is listed in {site} but has no private key ({path})\n  fix: `mailbake dkim keygen {site} {domain}` (then publish the record `mailbake dns` prints)"
    )]
    MissingDkimKey {
        domain: String,
        selector: String,
        site: PathBuf,
        path: PathBuf,
    },

    #[error(
        "DKIM selector {selector} of {domain} is declared as {declared} in the site file but the key in {path} is {actual}\n  fix: correct `domains.{domain}.dkim.selectors.{selector}` in the site file, or generate a new key under a new selector"
    )]
    DkimMismatch {
        domain: String,
        selector: String,
        declared: &'static str,
        actual: String,
        path: PathBuf,
    },

    #[error(
        "{site} configures `tls.acme` (provider {provider}) but the secrets store has no {path}\n  fix: write the DNS provider's credentials there as lego environment variables, one NAME=value per line (e.g. for rfc2136: RFC2136_NAMESERVER=..., RFC2136_TSIG_KEY=..., RFC2136_TSIG_SECRET=...), mode 0600"
    )]
    MissingAcmeEnv {
        site: PathBuf,
        provider: String,
        path: PathBuf,
    },

    /// systemd reads the file on the host and `mailbake cert` here: one rule for both.
    #[error(transparent)]
    BadAcmeEnv(#[from] crate::cert::env_file::EnvFileError),

    #[error(
        "{site} sets `tls.files: true` but {path} is missing\n  fix: copy the {what} there (PEM, mode 0600), or remove `tls.files` to let each host make a self-signed certificate at first boot"
    )]
    MissingTlsFile {
        site: PathBuf,
        path: PathBuf,
        what: &'static str,
    },

    #[error(
        "{path} does not look like {what} (no `{marker}` PEM block)\n  fix: supply {what} in PEM format"
    )]
    BadTlsFile {
        path: PathBuf,
        what: &'static str,
        marker: &'static str,
    },

    #[error("host {host}: cannot make seed.img: {source}")]
    Image {
        host: String,
        #[source]
        source: std::io::Error,
    },

    #[error("host {host}: rendering cloud-init/{template}.j2: {source:#}")]
    Template {
        host: String,
        template: &'static str,
        #[source]
        source: minijinja::Error,
    },
}

/// One host's seed.
#[derive(Clone, Debug)]
pub struct HostSeed {
    pub host: String,
    pub fqdn: String,
    pub user_data: Vec<u8>,
    pub meta_data: Vec<u8>,
    pub network_config: Vec<u8>,
    pub instance_id: String,
    /// The NoCloud volume holding the three files.
    pub image: Vec<u8>,
    /// For a site with `tls.acme`: which certificate the seed carries, for the build's report.
    pub certificate: Option<String>,
}

/// Builds the seed of every host of the site, with the site's template `context` and the
/// secrets from `store` (opened by [`crate::secrets::open_for_site`]; `None` for a site that
/// keeps no secret). All secrets are read and checked before any seed is made, so a missing
/// one fails the whole build, never half of it.
pub fn build(
    loaded: &LoadedSite,
    context: &SiteContext,
    store: Option<&SecretStore>,
) -> Result<Vec<HostSeed>, SeedError> {
    let material = Material::collect(loaded, store)?;
    loaded
        .site
        .hosts
        .iter()
        .map(|(name, host)| build_host(context, name, host, &material))
        .collect()
}

/// The seed of one host, from secrets already collected by [`Material::collect`].
pub fn build_host(
    context: &SiteContext,
    name: &HostName,
    host: &Host,
    material: &Material,
) -> Result<HostSeed, SeedError> {
    let files = render(&host_context(context, name, host, material))?;
    let image = image::build(&[
        ("meta-data", &files.meta_data),
        ("network-config", &files.network_config),
        ("user-data", &files.user_data),
    ])
    .map_err(|source| SeedError::Image {
        host: name.to_string(),
        source,
    })?;
    Ok(HostSeed {
        host: name.to_string(),
        fqdn: host.fqdn.to_string(),
        user_data: files.user_data,
        meta_data: files.meta_data,
        network_config: files.network_config,
        instance_id: files.instance_id,
        image,
        certificate: certificate_note(context, host, material),
    })
}

/// What the build says about `host`'s certificate when the site uses ACME.
fn certificate_note(context: &SiteContext, host: &Host, material: &Material) -> Option<String> {
    context.acme.as_ref()?;
    let fqdn = host.fqdn.as_str();
    Some(match material.acme.certificates.get(fqdn) {
        Some(c) => format!(
            "certificate from the secrets store (serial {}, valid until {}), served from the first boot",
            c.certificate.serial, c.certificate.not_after_text
        ),
        None => format!(
            "{}: the host obtains one after it boots; `mailbake cert` stores one so that reinstalls re-issue nothing",
            material
                .acme
                .absent
                .get(fqdn)
                .map_or("no stored certificate", String::as_str)
        ),
    })
}

/// What the cloud-init templates of `host` see.
pub fn host_context<'a>(
    context: &'a SiteContext,
    name: &HostName,
    host: &Host,
    material: &Material,
) -> HostContext<'a> {
    let (dirs, files) = files::host_files(host, material);
    HostContext {
        site: context,
        host: HostFacts {
            name: name.to_string(),
            fqdn: host.fqdn.to_string(),
        },
        network: network::context(host),
        dirs,
        files: files.iter().map(StagedFile::context).collect(),
        image: None,
    }
}

/// The three cloud-init files of one host, and the instance id meta-data carries.
#[derive(Clone, Debug)]
pub struct CloudInitFiles {
    pub user_data: Vec<u8>,
    pub network_config: Vec<u8>,
    pub meta_data: Vec<u8>,
    pub instance_id: String,
}

/// Renders the cloud-init templates for `context`.
pub fn render(context: &HostContext) -> Result<CloudInitFiles, SeedError> {
    let env = environment();
    let render = |template: &'static str, ctx: Value| {
        env.get_template(template)
            .and_then(|t| t.render(ctx))
            .map_err(|source| SeedError::Template {
                host: context.host.name.clone(),
                template,
                source,
            })
    };
    // The host's network and what its addresses must be travel in user-data like the other
    // files, so the provider path (user-data alone) gets them too: docs/seed.md.
    let mut staged = context.clone();
    for (template, path) in [
        ("networkd", network::NETWORKD_FILE),
        ("host.conf", network::HOST_CONF),
    ] {
        let text = render(template, Value::from_serialize(context))?;
        staged
            .files
            .push(StagedFile::public(path.to_string(), text.into_bytes()).context());
    }
    staged.files.sort_by(|a, b| a.path.cmp(&b.path));
    let context = &staged;
    let manifest = render("manifest", Value::from_serialize(context))?;
    let user_data = render(
        "user-data",
        minijinja::context! {
            manifest => FileContent::of(manifest.as_bytes()),
            ..Value::from_serialize(context)
        },
    )?
    .into_bytes();
    let network_config = render("network-config", Value::from_serialize(context))?.into_bytes();
    let instance_id = meta::instance_id(&user_data, &network_config);
    let meta_data = render(
        "meta-data",
        minijinja::context! { instance_id => &instance_id, ..Value::from_serialize(context) },
    )?
    .into_bytes();
    Ok(CloudInitFiles {
        user_data,
        network_config,
        meta_data,
        instance_id,
    })
}

/// The shared strict environment with the cloud-init templates added. They are part of the
/// binary, and a unit test renders each one, so adding them cannot fail at run time.
fn environment() -> Environment<'static> {
    let mut env = template::environment();
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            unreachable!("cloud-init/{name}.j2 does not parse: {e:#}");
        }
    }
    env
}

/// The build's output files for `seeds`: `hosts/<host>/seed/{user-data,meta-data,network-config}`
/// and `hosts/<host>/seed.img`, all 0600 (they carry password hashes and private keys).
pub fn output_files(seeds: &[HostSeed]) -> Vec<OutputFile> {
    seeds
        .iter()
        .flat_map(|s| {
            let dir = format!("hosts/{}", s.host);
            [
                OutputFile::secret(format!("{dir}/seed/user-data"), s.user_data.clone()),
                OutputFile::secret(format!("{dir}/seed/meta-data"), s.meta_data.clone()),
                OutputFile::secret(
                    format!("{dir}/seed/network-config"),
                    s.network_config.clone(),
                ),
                OutputFile::secret(format!("{dir}/seed.img"), s.image.clone()),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn loaded(yaml: &str) -> LoadedSite {
        let path = std::path::PathBuf::from("site.yaml");
        match crate::site::parse(&path, yaml) {
            Ok(site) => LoadedSite {
                site,
                path,
                dir: ".".into(),
            },
            Err(e) => panic!("{}", e.render(false)),
        }
    }

    const SITE: &str = "site: s\ndomains:\n  example.com: {}\nhosts:\n  mx1: { fqdn: mx1.example.com, ipv4: 192.0.2.1 }\n";

    /// Every value a cloud-init template writes goes through an escaping filter (`yaml`, or
    /// `word` in the manifest); the exceptions are text already checked to be a literal
    /// block, a constant number and macro calls.
    #[test]
    fn every_value_in_the_cloud_init_templates_is_escaped() {
        const CHECKED: [&str; 4] = [
            "content.text | indent(6, true)",
            "seed.manifest_version",
            "staged(seed.stage_dir ~ \"/manifest\", manifest)",
            "staged(seed.stage_dir ~ \"/files\" ~ file.path, file.content)",
        ];
        for (name, source) in TEMPLATES {
            let mut rest = source;
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}").expect("closed") + start;
                let expr = rest[start + 2..end].trim_matches(|c| c == '-' || c == ' ');
                assert!(
                    expr.ends_with("| yaml") || expr.ends_with("| word") || CHECKED.contains(&expr),
                    "cloud-init/{name}.j2 writes `{expr}` unescaped"
                );
                rest = &rest[end + 2..];
            }
        }
    }

    #[test]
    fn every_template_parses() {
        for (name, source) in TEMPLATES {
            let mut env = template::environment();
            assert!(env.add_template(name, source).is_ok(), "{name}");
        }
    }

    #[test]
    fn staged_file_contents_parse_back_to_the_same_bytes() {
        let samples: [&[u8]; 5] = [
            b"users: {\n  key: \"i\"\n  value: {\n    scrypt: {\n      salt: \"\\xf0\\x01\"\n    }\n  }\n}\n",
            b"A=1\n\n# c\nB=two words\n",
            b"",
            b"\x00\x01binary",
            b"x: \"#not a comment\"\n\ttab\n",
        ];
        let loaded = loaded(SITE);
        let context = SiteContext::for_site(&loaded).unwrap();
        let (name, host) = loaded.site.hosts.iter().next().unwrap();
        let material = Material {
            files: samples
                .iter()
                .enumerate()
                .map(|(i, data)| StagedFile::root_only(format!("/x/{i}"), data.to_vec()))
                .collect(),
            tls: None,
            acme: AcmeMaterial::default(),
        };
        let files = render(&host_context(&context, name, host, &material)).unwrap();
        let doc: serde_json::Value = serde_norway::from_slice(&files.user_data).unwrap();
        for (i, data) in samples.iter().enumerate() {
            let staged = format!("{}/files/x/{i}", template::SEED_STAGE_DIR);
            let entry = doc["write_files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["path"] == staged.as_str())
                .unwrap_or_else(|| panic!("{staged} not staged"));
            let content = entry["content"].as_str().unwrap();
            let bytes = if entry["encoding"] == "b64" {
                base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .unwrap()
            } else {
                content.as_bytes().to_vec()
            };
            assert_eq!(
                &bytes,
                data,
                "{}",
                String::from_utf8_lossy(&files.user_data)
            );
        }
    }
}
