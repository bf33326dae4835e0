//! What templates may use: one typed context for `layers/` and `cloud-init/`.
//!
//! [`SiteContext`] holds the site-wide facts. Layers render with it alone: hosts are deliberately
//! absent, because the overlay is the same for every host of a site and a layer naming `host`
//! must fail (undefined variables are errors). A host's seed renders with [`HostContext`]: the
//! same site facts plus that host and the files its seed stages.
//!
//! [`SeedFormat`] is the contract between the seed and the image: where cloud-init stages the
//! seed's files and which manifest version the image's `apply-seed` reads. It is defined here
//! once and rendered into both sides (`cloud-init/`, and the image's `seed.conf` and units).

use base64::Engine as _;
use serde::Serialize;

use super::acme_ca::{self, AcmeCaError};
use super::mail_policy::MailPolicy;
use crate::site::{AliasTarget, LoadedSite, Site};

/// Where `user-data` stages the seed's files and the manifest: on tmpfs, so the staged copies
/// of the secrets do not outlive the boot that installs them.
pub const SEED_STAGE_DIR: &str = "/run/mailbake/seed";

/// The version of the manifest `user-data` stages. apply-seed refuses any other: a seed made
/// by another mailbake than the image's must fail loudly, not half-install. Version 2 added
/// the `v` line itself (version 1 only named itself in a comment).
pub const SEED_MANIFEST_VERSION: u32 = 2;

/// See the module documentation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SeedFormat {
    pub stage_dir: &'static str,
    pub manifest_version: u32,
}

impl SeedFormat {
    pub const CURRENT: SeedFormat = SeedFormat {
        stage_dir: SEED_STAGE_DIR,
        manifest_version: SEED_MANIFEST_VERSION,
    };
}

/// The site-wide facts a template sees.
#[derive(Clone, Debug, Serialize)]
pub struct SiteContext {
    /// The site's name.
    pub site: String,
    pub domains: Vec<DomainContext>,
    pub chasquid: ChasquidContext,
    /// `None` (false in a template's `if`) when the site does not use ACME.
    pub acme: Option<AcmeContext>,
    /// The account each seed creates for the operator.
    pub operator: OperatorContext,
    pub seed: SeedFormat,
    /// What the post-data hook enforces (the chasquid layer's `hooks/mailbake/policy`).
    pub mail_policy: MailPolicy,
    /// Networks the auth guard never bans, in CIDR form (the auth-guard layer's allowlist).
    pub auth_guard_allow: Vec<String>,
}

/// One mail domain; layers with a `[domain]` path segment see it as `domain`.
#[derive(Clone, Debug, Serialize)]
pub struct DomainContext {
    pub name: String,
    pub users: Vec<String>,
    pub aliases: Vec<AliasContext>,
    pub dkim_selectors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AliasContext {
    pub name: String,
    /// The right-hand side of an aliases line in chasquid's syntax.
    pub targets: String,
}

/// chasquid.conf's settings (see [`crate::site::ChasquidSettings`]); strings go through the
/// `textproto` filter.
#[derive(Clone, Debug, Serialize)]
pub struct ChasquidContext {
    pub max_data_size_mb: u32,
    pub max_queue_items: u32,
    /// A Go duration (`20h`).
    pub give_up_send_after: String,
    /// `host:port` of the monitoring server; `None` (false in an `if`) when it is off.
    pub monitoring_address: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AcmeContext {
    pub directory: String,
    pub email: String,
    pub provider: String,
    /// lego's spelling (`ec256`, ...).
    pub key_type: &'static str,
    /// Names on the certificate, each once, in the order the operator wrote them.
    pub names: Vec<String>,
    pub include_hostname: bool,
    pub resolvers: Vec<String>,
    /// The checked PEM bundle of `tls.acme.ca_certificates`; empty when there is none.
    pub ca_bundle: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OperatorContext {
    pub user: String,
    pub authorized_keys: Vec<String>,
}

impl SiteContext {
    /// The context of a loaded site. Reads and checks the site's ACME CA certificates (the
    /// only files besides the site file that the context comes from; see [`acme_ca`]).
    pub fn for_site(loaded: &LoadedSite) -> Result<SiteContext, AcmeCaError> {
        let site = &loaded.site;
        let ca_bundle = acme_ca::bundle(site, &loaded.dir)?;
        Ok(SiteContext {
            site: site.site.to_string(),
            domains: domains(site),
            chasquid: ChasquidContext {
                max_data_size_mb: site.chasquid.max_data_size_mb,
                max_queue_items: site.chasquid.max_queue_items,
                give_up_send_after: site.chasquid.give_up_send_after.to_string(),
                monitoring_address: site.chasquid.monitoring_address.map(|a| a.to_string()),
            },
            acme: acme(site, ca_bundle),
            operator: OperatorContext {
                user: site.ssh.user.to_string(),
                authorized_keys: site
                    .ssh
                    .authorized_keys
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
            seed: SeedFormat::CURRENT,
            mail_policy: super::mail_policy::for_site(site),
            auth_guard_allow: site
                .auth_guard
                .allow
                .iter()
                .map(ToString::to_string)
                .collect(),
        })
    }
}

fn domains(site: &Site) -> Vec<DomainContext> {
    site.domains
        .iter()
        .map(|(name, domain)| DomainContext {
            name: name.to_string(),
            users: domain.users.iter().map(ToString::to_string).collect(),
            aliases: domain
                .aliases
                .iter()
                .map(|(alias, targets)| AliasContext {
                    name: alias.to_string(),
                    targets: chasquid_targets(&targets.0),
                })
                .collect(),
            dkim_selectors: domain
                .dkim
                .selectors
                .keys()
                .map(ToString::to_string)
                .collect(),
        })
        .collect()
}

fn acme(site: &Site, ca_bundle: Option<String>) -> Option<AcmeContext> {
    let acme = site.tls.acme.as_ref()?;
    // The same names `mailbake cert` and the seeds use (one definition).
    let names = crate::site::certificate_site_names(site);
    Some(AcmeContext {
        directory: acme.directory.to_string(),
        email: acme.email.to_string(),
        provider: acme.provider.to_string(),
        key_type: acme.key_type.as_lego(),
        names,
        include_hostname: true,
        resolvers: acme.resolvers.iter().map(ToString::to_string).collect(),
        ca_bundle: ca_bundle.unwrap_or_default(),
    })
}

/// The right-hand side of an aliases line in chasquid's syntax.
fn chasquid_targets(targets: &[AliasTarget]) -> String {
    targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One host's seed as its cloud-init templates see it: the site's [`SiteContext`] (as `site`,
/// `operator`, `seed`, ... at the top level), the host, and the files its seed stages.
#[derive(Clone, Debug, Serialize)]
pub struct HostContext<'a> {
    #[serde(flatten)]
    pub site: &'a SiteContext,
    pub host: HostFacts,
    pub network: NetworkContext,
    /// Directories apply-seed creates, root:chasquid 0750 (the TLS certificate's).
    pub dirs: Vec<String>,
    /// The files the seed stages, sorted by destination path.
    pub files: Vec<StagedFileContext>,
    /// The disk image the host is to run, when the seed is made for one (provider user-data
    /// from `mailbake terraform`); `None` for the seeds of `build`.
    pub image: Option<ImageFacts>,
}

/// The disk image a seed is made for: naming it in the user-data makes a new image change
/// the user-data too, so a provider that reinstalls on either always gets both.
#[derive(Clone, Debug, Serialize)]
pub struct ImageFacts {
    /// sha256 of the image file, 64 lowercase hex digits.
    pub sha256: String,
    /// Where the provider downloads it from.
    pub url: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostFacts {
    /// The host's short name in the site (`mx1`).
    pub name: String,
    /// Its fqdn: system hostname, PTR target, chasquid's greeting.
    pub fqdn: String,
}

/// A file of the seed, staged under [`SEED_STAGE_DIR`]`/files` + `path` and installed at
/// `path` by apply-seed.
#[derive(Clone, Debug, Serialize)]
pub struct StagedFileContext {
    /// Absolute destination path on the host; validated names only, so never white space.
    pub path: String,
    /// Octal, four digits (`0640`).
    pub mode: String,
    pub owner: &'static str,
    pub group: &'static str,
    pub content: FileContent,
}

/// A file's bytes as a YAML document can carry them exactly.
#[derive(Clone, Debug, Serialize)]
pub struct FileContent {
    /// The content when a YAML literal block gives back exactly these bytes (PEM keys and
    /// users databases always do; see [`super::yaml::literal_block_text`]), else `None` and
    /// the content is in `base64`.
    pub text: Option<String>,
    pub base64: Option<String>,
}

impl FileContent {
    pub fn of(data: &[u8]) -> FileContent {
        match super::yaml::literal_block_text(data) {
            Some(text) => FileContent {
                text: Some(text.to_string()),
                base64: None,
            },
            None => FileContent {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            },
        }
    }
}

/// The uplink of a host, as netplan v2 wants it (see `cloud-init/network-config.j2`).
#[derive(Clone, Debug, Serialize)]
pub struct NetworkContext {
    /// The netplan id (a label only; the match decides which device it is).
    pub interface: &'static str,
    /// IPv4 by DHCP (else static, in `addresses` and `routes`).
    pub dhcp4: bool,
    /// The host has a static IPv6 address: no DHCPv6, no router advertisements.
    pub ipv6: bool,
    /// Static addresses with their prefix length (`203.0.113.10/24`, `2001:db8::10/64`).
    pub addresses: Vec<String>,
    pub routes: Vec<RouteContext>,
    /// The site's resolvers for this host; empty means "what DHCP gives".
    pub nameservers: Vec<String>,
    /// The host's public IPv4 address, without a prefix (also when DHCP assigns it).
    pub ipv4_address: String,
    /// Static IPv4 only: the prefix length and the gateway.
    pub ipv4_prefix: Option<String>,
    pub ipv4_gateway: Option<String>,
    /// With a static IPv6 address: the address without its prefix, the prefix length and the
    /// gateway (`host.conf`, which the image's scripts compare with what the host has).
    pub ipv6_address: Option<String>,
    pub ipv6_prefix: Option<String>,
    pub ipv6_gateway: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RouteContext {
    pub to: String,
    pub via: String,
    /// The gateway is outside the address's prefix (typically `fe80::1`).
    pub on_link: bool,
}
