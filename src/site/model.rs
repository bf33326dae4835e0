//! The site model: what one site file says, already validated value by value.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::chasquid::ChasquidSettings;
use super::names::{AliasName, DomainName, HostName, LocalPart, MailAddress, Selector, SiteName};
use super::net::{Ipv4Config, Ipv6Config};
use super::policy::{AliasTargets, DkimAlgorithm, Dmarc, Spf, TlsRptUris};

/// A whole site: the mail domains it serves and the hosts that serve them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Short name of the site, used to name artifacts.
    pub site: SiteName,
    pub domains: UniqueMap<DomainName, Domain>,
    pub hosts: UniqueMap<HostName, Host>,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub chasquid: ChasquidSettings,
    #[serde(default)]
    pub ssh: Ssh,
    #[serde(default)]
    pub dns: DnsSettings,
    #[serde(default)]
    pub limits: super::sending::Limits,
    /// Networks the auth guard never bans (`auth_guard: {allow: [...]}`).
    #[serde(default)]
    pub auth_guard: super::auth_guard::AuthGuard,
}

/// One mail domain.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// Users who can authenticate and receive mail; their password hashes live in the secrets
    /// store, never in the site file.
    #[serde(default)]
    pub users: Vec<LocalPart>,
    #[serde(default)]
    pub aliases: UniqueMap<AliasName, AliasTargets>,
    /// Addresses a user may send as beyond their own and those whose aliases deliver to
    /// them: `{ i: ["*@example.com"] }` (see [`super::sending`]).
    #[serde(default)]
    pub send_as: UniqueMap<LocalPart, Vec<super::sending::SendAs>>,
    #[serde(default)]
    pub dkim: Dkim,
    #[serde(default)]
    pub spf: Spf,
    #[serde(default)]
    pub dmarc: Option<Dmarc>,
    /// MTA-STS (RFC 8461): when present, `mailbake dns` publishes `_mta-sts.<domain>` and the
    /// policy that must be served at `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
    /// Absent means the domain does not use MTA-STS.
    #[serde(default)]
    pub mta_sts: Option<MtaSts>,
    /// SMTP TLS reporting (RFC 8460): when present, `mailbake dns` publishes
    /// `_smtp._tls.<domain>` asking senders to report TLS failures to `rua`.
    #[serde(default)]
    pub tls_rpt: Option<TlsRpt>,
}

/// A domain's MTA-STS policy. Its `mx:` lines are the site's host names, so senders that
/// honour the policy refuse to deliver to any other server (or over plain text, in `enforce`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaSts {
    /// Start with `testing`: senders only report failures. Switch to `enforce` once the TLS
    /// reports are clean, because an enforced policy with a broken certificate stops mail.
    #[serde(default)]
    pub mode: MtaStsMode,
    /// How long senders cache the policy, in seconds (RFC 8461 allows at most 31557600).
    #[serde(
        default = "default_mta_sts_max_age",
        deserialize_with = "mta_sts_max_age"
    )]
    pub max_age: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MtaStsMode {
    #[default]
    Testing,
    Enforce,
    None,
}

impl MtaStsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtaStsMode::Testing => "testing",
            MtaStsMode::Enforce => "enforce",
            MtaStsMode::None => "none",
        }
    }
}

/// One week: long enough to protect against a downgrade between a sender's visits, short
/// enough that a mistake in the policy does not linger for months.
fn default_mta_sts_max_age() -> u32 {
    604_800
}

fn mta_sts_max_age<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    const MAX: u64 = 31_557_600;
    // Below a day a sender forgets the policy between two visits, and 0 tells it to keep
    // nothing: the policy then protects nothing (RFC 8461 recommends weeks).
    const MIN: u64 = 86_400;
    let n = u64::deserialize(d)?;
    if n < MIN {
        return Err(de::Error::custom(format!(
            "max_age {n} is too short: senders would forget the policy before their next visit; give at least {MIN} seconds (one day), e.g. 604800 (one week)"
        )));
    }
    u32::try_from(n)
        .ok()
        .filter(|n| u64::from(*n) <= MAX)
        .ok_or_else(|| {
            de::Error::custom(format!(
                "max_age {n} is too long; MTA-STS allows at most {MAX} seconds (one year)"
            ))
        })
}

/// Where senders send SMTP TLS reports (`mailto:` URIs).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRpt {
    pub rua: TlsRptUris,
}

/// DKIM selectors of a domain and the algorithm of each one's key. chasquid signs with every
/// key present, so an RSA and an Ed25519 selector give dual signatures.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    #[serde(default)]
    pub selectors: UniqueMap<Selector, DkimAlgorithm>,
    /// Selectors that no longer sign but stay published in DNS, so that mail signed with them
    /// before a rotation still verifies. Their keys stay in the secrets store and never reach
    /// a host. Remove a selector from here to stop publishing it.
    #[serde(default)]
    pub retired: UniqueMap<Selector, DkimAlgorithm>,
}

/// One server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's name in DNS: its A/AAAA records, the target of PTR and MX, the system
    /// hostname and chasquid's greeting name (walkthrough steps 8 and 9).
    pub fqdn: DomainName,
    pub ipv4: Ipv4Config,
    #[serde(default)]
    pub ipv6: Option<Ipv6Config>,
    /// Resolvers for the static network configuration; empty means "what DHCP gives".
    #[serde(default, deserialize_with = "resolver_addresses")]
    pub nameservers: Vec<IpAddr>,
    /// Accept addresses the internet cannot reach (RFC 1918, CGNAT, unique local IPv6) for
    /// this host: a lab or test network only. Off by default, because an MX on a private
    /// address receives no mail and its A, PTR and SPF records mean nothing outside.
    #[serde(default)]
    pub allow_private: bool,
}

/// How hosts get their certificates. Without `acme`, each host makes a self-signed bootstrap
/// certificate at first boot so chasquid can start.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub acme: Option<Acme>,
    /// The operator supplies the certificate: the secrets store holds `tls-fullchain.pem` and
    /// `tls-privkey.pem` (one pair for every host of the site, so it must name each host's
    /// fqdn) and each seed installs them as `/etc/chasquid/certs/<fqdn>/`. Explicit rather
    /// than "whatever is in the store", so a forgotten file is an error, not a silent
    /// self-signed certificate. With `acme` too, ACME replaces it once issued.
    #[serde(default)]
    pub files: bool,
}

/// ACME DNS-01 with lego. Provider credentials live in the secrets store and reach the host
/// only through its seed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// A lego DNS provider name (`cloudflare`, `rfc2136`, ...).
    pub provider: LegoProvider,
    pub email: MailAddress,
    #[serde(default = "default_acme_directory")]
    pub directory: HttpsUrl,
    #[serde(default)]
    pub key_type: AcmeKeyType,
    /// Names on the certificate; empty means the host fqdn, every domain and `*.domain`.
    #[serde(default)]
    pub names: Vec<CertName>,
    /// Extra CA certificates (PEM files, relative to the site file) lego trusts for the
    /// directory's HTTPS: a private or test ACME server. Public material: the bundle goes into
    /// the image. Read and checked at build time.
    #[serde(default)]
    pub ca_certificates: Vec<std::path::PathBuf>,
    /// DNS servers (`host[:port]`) lego asks for the zone's SOA and nameservers before checking
    /// that the challenge record has propagated; empty means the host's resolvers. Set it when
    /// the host's resolver cannot see the provider's zone (split horizon, a test network).
    #[serde(default)]
    pub resolvers: Vec<Resolver>,
}

fn default_acme_directory() -> HttpsUrl {
    HttpsUrl("https://acme-v02.api.letsencrypt.org/directory".into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AcmeKeyType {
    #[default]
    Ec256,
    Ec384,
    Rsa2048,
    Rsa4096,
}

impl AcmeKeyType {
    /// The spelling lego's `--key-type` takes.
    pub fn as_lego(self) -> &'static str {
        match self {
            AcmeKeyType::Ec256 => "ec256",
            AcmeKeyType::Ec384 => "ec384",
            AcmeKeyType::Rsa2048 => "rsa2048",
            AcmeKeyType::Rsa4096 => "rsa4096",
        }
    }
}

/// Operator access. Public keys are not secret, so they live in the site file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default)]
    pub authorized_keys: Vec<SshPublicKey>,
    /// The operator account each seed creates (SSH keys above, passwordless sudo, no
    /// password). Default `admin`.
    #[serde(default = "default_operator")]
    pub user: OperatorName,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            authorized_keys: Vec::new(),
            user: default_operator(),
        }
    }
}

fn default_operator() -> OperatorName {
    OperatorName("admin".into())
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    #[serde(default = "default_ttl", deserialize_with = "dns_ttl")]
    pub ttl: u32,
}

/// RFC 2181 (8): a TTL is at most 2^31 - 1; resolvers treat a larger one as 0.
fn dns_ttl<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    const MAX: u64 = i32::MAX as u64;
    let n = u64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|n| u64::from(*n) <= MAX)
        .ok_or_else(|| {
            de::Error::custom(format!(
                "ttl {n} is larger than DNS allows ({MAX}, RFC 2181); resolvers would read it as 0. Give seconds, e.g. 3600"
            ))
        })
}

/// A host's resolvers: addresses a resolver can have. `0.0.0.0`, `::`, multicast and the
/// broadcast address name no server, and netplan would write them as given.
fn resolver_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    let list = Vec::<IpAddr>::deserialize(d)?;
    for ip in &list {
        let bad = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if bad {
            return Err(de::Error::custom(format!(
                "nameserver {ip} is not the address of a DNS server (unspecified, multicast or broadcast); give the resolver's unicast address, e.g. 198.51.100.53, or leave nameservers empty to use what DHCP gives"
            )));
        }
    }
    Ok(list)
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings { ttl: default_ttl() }
    }
}

fn default_ttl() -> u32 {
    3600
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                let check: fn(&str) -> Result<(), String> = $check;
                check(&text).map_err(de::Error::custom)?;
                Ok($name(text))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_string!(
    /// A lego DNS provider name: lowercase letters and digits, in dot-separated parts that
    /// are never empty (`cloudflare`, `httpreq`, `edgedns`, `namesilo`; `..` or `.x` are not
    /// names and would reach lego's command line as such).
    LegoProvider,
    |text| {
        if text.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        }) {
            Ok(())
        } else {
            Err(format!(
                "`{text}` is not a lego DNS provider name; use the name from lego's provider list, e.g. `cloudflare` or `rfc2136`"
            ))
        }
    }
);

checked_string!(
    /// An `https://` URL (an ACME directory).
    HttpsUrl,
    |text| {
        let rest = text.strip_prefix("https://").ok_or_else(|| {
            format!("`{text}` must be an https:// URL (ACME requires TLS)")
        })?;
        if rest.is_empty() || rest.starts_with('/') || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{}` is not a valid URL", text.escape_debug()));
        }
        match super::url::url_problem(text, &["https://"]) {
            // The user information is left out of the message: it is a credential.
            Some(problem) if problem.contains("user information") => Err(format!("the URL {problem}")),
            Some(problem) => Err(format!("`{text}` {problem}")),
            None => Ok(()),
        }
    }
);

checked_string!(
    /// A DNS server for lego's propagation check: an IP address or host name, optionally with
    /// `:port` (IPv6 with a port in brackets, `[2001:db8::1]:53`).
    Resolver,
    |text| {
        let bad = || {
            format!(
                "`{text}` is not a DNS server; write an address or name with an optional port, e.g. `1.1.1.1`, `ns1.example.net:53` or `[2001:db8::1]:53`"
            )
        };
        if text.parse::<std::net::IpAddr>().is_ok() || text.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(());
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err(bad());
        }
        DomainName::try_from(host).map(|_| ()).map_err(|_| bad())
    }
);

checked_string!(
    /// A name on a certificate: a domain, optionally with a leading `*.` wildcard.
    CertName,
    |text| {
        let base = text.strip_prefix("*.").unwrap_or(text);
        DomainName::try_from(base).map(|_| ())
    }
);

checked_string!(
    /// A login name for the operator account: what `useradd` accepts on Debian and Ubuntu by
    /// default, minus names that already belong to the system or to chasquid.
    OperatorName,
    |text| {
        let mut chars = text.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !first_ok || !rest_ok || text.len() > 32 {
            return Err(format!(
                "`{text}` is not a login name; use lowercase letters, digits, `_` and `-`, starting with a letter (at most 32), e.g. `admin`"
            ));
        }
        if let Some(problem) = super::system_names::system_name_problem(text) {
            return Err(format!("{problem}; choose another operator name, e.g. `ops`"));
        }
        Ok(())
    }
);

checked_string!(
    /// One line of an OpenSSH `authorized_keys` file.
    SshPublicKey,
    |text| {
        const TYPES: [&str; 6] = [
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "sk-ssh-ed25519@openssh.com",
        ];
        let mut parts = text.split_whitespace();
        let kind = parts.next().unwrap_or("");
        let blob = parts.next().unwrap_or("");
        if !TYPES.contains(&kind) || blob.len() < 16 || text.contains(['\n', '\r']) {
            return Err(format!(
                "not an SSH public key line; expected `<type> <base64> [comment]` on one line, with type one of {}",
                TYPES.join(", ")
            ));
        }
        ssh_key_blob_names(kind, blob).map_err(|why| {
            format!("SSH key `{kind} {}…`: {why}; copy the whole line of the `.pub` file again", truncate_chars(blob, 12))
        })

    }
);

/// sshd decodes the base64 blob and reads the key type written inside it (RFC 4253: a
/// length-prefixed string); a blob that does not decode, or names another type, is ignored by
/// sshd, which would lock the operator out of every host.
fn ssh_key_blob_names(kind: &str, blob: &str) -> Result<(), String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|e| format!("the key is not valid base64 ({e})"))?;
    let named = bytes
        .get(..4)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .map(|len| u32::from_be_bytes(len) as usize)
        .and_then(|len| bytes.get(4..4 + len));
    match named {
        Some(name) if name == kind.as_bytes() => Ok(()),
        Some(name) => Err(format!(
            "the key inside is a `{}` key, not `{kind}`",
            String::from_utf8_lossy(name)
        )),
        None => Err("the decoded key is too short to be an SSH key".into()),
    }
}

/// The first `n` characters of `text`.
fn truncate_chars(text: &str, n: usize) -> &str {
    text.char_indices().nth(n).map_or(text, |(i, _)| &text[..i])
}

/// A map that refuses two keys that mean the same thing. YAML already refuses literal
/// duplicates, but `Example.com` and `example.com.` are the same domain once normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueMap<K, V>(pub BTreeMap<K, V>);

impl<K, V> Default for UniqueMap<K, V> {
    fn default() -> Self {
        UniqueMap(BTreeMap::new())
    }
}

impl<K, V> std::ops::Deref for UniqueMap<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.0
    }
}

impl<'de, K, V> Deserialize<'de> for UniqueMap<K, V>
where
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
        where
            K: Deserialize<'de> + Ord + fmt::Display,
            V: Deserialize<'de>,
        {
            type Value = UniqueMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<K>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format!(
                            "`{key}` is listed twice (names are compared lowercase, without a trailing dot); merge the two entries"
                        )));
                    }
                    let value = map.next_value::<V>()?;
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}
