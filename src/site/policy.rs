//! Mail policy settings of a domain: aliases, DKIM selectors, SPF and DMARC.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::names::{DnsName, LocalPart, MailAddress};

/// A string or a list of strings, for keys where both read naturally.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Where an alias delivers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AliasTarget {
    /// A user or alias of the same domain (`i`).
    Local(LocalPart),
    /// A full address, local to the site or elsewhere (`someone@gmail.com`).
    Address(MailAddress),
    /// A command the message is piped into (`| /usr/local/bin/filter`).
    Pipe(String),
}

impl fmt::Display for AliasTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasTarget::Local(l) => write!(f, "{l}"),
            AliasTarget::Address(a) => write!(f, "{a}"),
            AliasTarget::Pipe(cmd) => write!(f, "| {cmd}"),
        }
    }
}

/// The right-hand side of an alias: one target, a comma-separated string of them (chasquid's
/// own syntax) or a YAML list. A pipe must stand alone, as in chasquid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasTargets(pub Vec<AliasTarget>);

impl<'de> Deserialize<'de> for AliasTargets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = OneOrMany::deserialize(d).map_err(|_| {
            de::Error::custom(
                "expected an address, a comma-separated string of addresses, or a list of them",
            )
        })?;
        let items: Vec<String> = match raw {
            OneOrMany::One(text) if text.trim_start().starts_with('|') => {
                return parse_pipe(&text)
                    .map(|p| AliasTargets(vec![p]))
                    .map_err(de::Error::custom);
            }
            OneOrMany::One(text) => text.split(',').map(|s| s.trim().to_string()).collect(),
            OneOrMany::Many(list) => list.into_iter().map(|s| s.trim().to_string()).collect(),
        };
        if items.is_empty() || items.iter().any(String::is_empty) {
            return Err(de::Error::custom(
                "empty alias target; list at least one address (`user` or `user@domain`)",
            ));
        }
        let mut targets = Vec::with_capacity(items.len());
        for item in items {
            let target = if item.starts_with('|') {
                return Err(de::Error::custom(format!(
                    "`{item}`: a pipe alias must be the only target of its alias"
                )));
            } else if item.contains('@') {
                MailAddress::try_from(item).map(AliasTarget::Address)
            } else {
                LocalPart::try_from(item).map(AliasTarget::Local)
            };
            targets.push(target.map_err(de::Error::custom)?);
        }
        Ok(AliasTargets(targets))
    }
}

fn parse_pipe(text: &str) -> Result<AliasTarget, String> {
    let command = text.trim_start().trim_start_matches('|').trim();
    if command.is_empty() {
        return Err("a pipe alias needs a command after `|`".into());
    }
    if command.contains('\n') {
        return Err("a pipe alias command must fit on one line".into());
    }
    Ok(AliasTarget::Pipe(command.to_string()))
}

/// DKIM key algorithms a selector can use; the secrets store generates keys of these kinds.
/// RSA is what every receiver verifies; Ed25519 (RFC 8463) is small but not verified
/// everywhere, so it is meant to be published *in addition* to RSA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
pub enum DkimAlgorithm {
    #[default]
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl DkimAlgorithm {
    pub const ALL: [DkimAlgorithm; 4] = [
        DkimAlgorithm::Rsa2048,
        DkimAlgorithm::Rsa3072,
        DkimAlgorithm::Rsa4096,
        DkimAlgorithm::Ed25519,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa2048 => "rsa-2048",
            DkimAlgorithm::Rsa3072 => "rsa-3072",
            DkimAlgorithm::Rsa4096 => "rsa-4096",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The modulus size of an RSA algorithm; `None` for Ed25519.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            DkimAlgorithm::Rsa2048 => Some(2048),
            DkimAlgorithm::Rsa3072 => Some(3072),
            DkimAlgorithm::Rsa4096 => Some(4096),
            DkimAlgorithm::Ed25519 => None,
        }
    }
}

impl fmt::Display for DkimAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DkimAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DkimAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown DKIM algorithm {s:?}; valid: rsa-2048, rsa-3072, rsa-4096, ed25519"
                )
            })
    }
}

/// The SPF `all` qualifier. `+all` is not offered: it authorizes the whole internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
pub enum SpfPolicy {
    #[serde(rename = "-all")]
    Fail,
    #[default]
    #[serde(rename = "~all")]
    SoftFail,
    #[serde(rename = "?all")]
    Neutral,
}

impl SpfPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SpfPolicy::Fail => "-all",
            SpfPolicy::SoftFail => "~all",
            SpfPolicy::Neutral => "?all",
        }
    }
}

/// SPF for a domain. The record always authorizes the site's hosts (`ip4:`/`ip6:`) and `mx`;
/// `include` adds other senders (the walkthrough includes Gmail's).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Spf {
    #[serde(default)]
    pub include: Vec<DnsName>,
    #[serde(default)]
    pub policy: SpfPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Alignment {
    #[serde(rename = "r")]
    Relaxed,
    #[serde(rename = "s")]
    Strict,
}

impl Alignment {
    pub fn as_str(self) -> &'static str {
        match self {
            Alignment::Relaxed => "r",
            Alignment::Strict => "s",
        }
    }
}

/// DMARC for a domain, published at `_dmarc.<domain>` (RFC 9989, which obsoletes RFC 7489).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "DmarcFields")]
pub struct Dmarc {
    pub p: DmarcPolicy,
    /// Policy for subdomains that exist.
    pub sp: Option<DmarcPolicy>,
    /// Policy for subdomains that do not exist (RFC 9989 `np`).
    pub np: Option<DmarcPolicy>,
    /// Testing mode (RFC 9989 `t=y`): receivers apply the policy one step milder (reject as
    /// quarantine, quarantine as none) while the reports are checked.
    pub t: Option<bool>,
    pub fo: Option<FailureOptions>,
    pub adkim: Option<Alignment>,
    pub aspf: Option<Alignment>,
    pub rua: Option<ReportUris>,
    pub ruf: Option<ReportUris>,
}

/// What the site file may write under `dmarc:`, the tags RFC 9989 removed included, so that
/// they are refused with a fix rather than as unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DmarcFields {
    p: DmarcPolicy,
    #[serde(default)]
    sp: Option<DmarcPolicy>,
    #[serde(default)]
    np: Option<DmarcPolicy>,
    #[serde(default)]
    t: Option<bool>,
    #[serde(default)]
    fo: Option<FailureOptions>,
    #[serde(default)]
    adkim: Option<Alignment>,
    #[serde(default)]
    aspf: Option<Alignment>,
    #[serde(default)]
    rua: Option<ReportUris>,
    #[serde(default)]
    ruf: Option<ReportUris>,
    #[serde(default)]
    pct: Option<serde_norway::Value>,
    #[serde(default)]
    rf: Option<serde_norway::Value>,
    #[serde(default)]
    ri: Option<serde_norway::Value>,
}

impl TryFrom<DmarcFields> for Dmarc {
    type Error = String;

    /// `pct` is refused, not mapped to `t`: `pct=50` meant "apply the policy to half of the
    /// failing mail", `t=y` means "apply a milder policy to all of it"; no mapping keeps the
    /// operator's meaning, so the operator chooses.
    fn try_from(f: DmarcFields) -> Result<Dmarc, String> {
        if f.pct.is_some() {
            return Err(
                "`pct` was removed from DMARC by RFC 9989 and receivers ignore it; to \
                 roll a policy out gently, write `t: true` (published as `t=y`: receivers \
                 apply it one step milder) and remove `pct`"
                    .into(),
            );
        }
        if f.rf.is_some() || f.ri.is_some() {
            return Err(
                "`rf` and `ri` were removed from DMARC by RFC 9989 (failure reports \
                 have one format, aggregate reports come daily); remove them"
                    .into(),
            );
        }
        Ok(Dmarc {
            p: f.p,
            sp: f.sp,
            np: f.np,
            t: f.t,
            fo: f.fo,
            adkim: f.adkim,
            aspf: f.aspf,
            rua: f.rua,
            ruf: f.ruf,
        })
    }
}

/// DMARC `fo=`: failure reporting options, colon-separated from `0`, `1`, `d`, `s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureOptions(pub String);

impl<'de> Deserialize<'de> for FailureOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FoVisitor;
        impl Visitor<'_> for FoVisitor {
            type Value = FailureOptions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("DMARC failure options such as \"1\" or \"d:s\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FailureOptions, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<FailureOptions, E> {
                let parts: Vec<&str> = text.split(':').map(str::trim).collect();
                if parts.iter().all(|p| matches!(*p, "0" | "1" | "d" | "s")) {
                    Ok(FailureOptions(parts.join(":")))
                } else {
                    Err(E::custom(format!(
                        "fo `{text}` is not valid; use `0`, `1`, `d` or `s`, or several joined by `:` (e.g. `1` or `d:s`)"
                    )))
                }
            }
        }
        d.deserialize_any(FoVisitor)
    }
}

/// One report destination: `mailto:<address>`, with DMARC's optional size limit
/// (`!10m`: RFC 7489 6.2, a number with an optional `k`, `m`, `g` or `t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportUri {
    pub address: MailAddress,
    pub max_size: Option<String>,
}

/// DMARC report destinations: `mailto:` URIs, one or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportUris(pub Vec<ReportUri>);

impl<'de> Deserialize<'de> for ReportUris {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = OneOrMany::deserialize(d)
            .map_err(|_| de::Error::custom("expected a `mailto:` URI or a list of them"))?;
        let uris = match raw {
            OneOrMany::One(u) => vec![u],
            OneOrMany::Many(list) => list,
        };
        let mut out = Vec::with_capacity(uris.len());
        for uri in uris {
            out.push(parse_report_uri(&uri).map_err(de::Error::custom)?);
        }
        Ok(ReportUris(out))
    }
}

fn parse_report_uri(uri: &str) -> Result<ReportUri, String> {
    let Some(rest) = uri.strip_prefix("mailto:") else {
        if uri.starts_with("https:") || uri.starts_with("http:") {
            return Err(format!(
                "`{uri}`: mailbake publishes report destinations as `mailto:` URIs only (an https: URI is valid for TLS-RPT, RFC 8460, but not for DMARC, and mailbake does not publish it); give the address that receives the reports, e.g. `mailto:reports@example.com`"
            ));
        }
        // Suggest the `mailto:` form only for what is an address; another scheme is no
        // address to prefix.
        return Err(match uri.split_once(':') {
            None if uri.contains('@') => {
                format!("`{uri}` is not a `mailto:` URI; write `mailto:{uri}`")
            }
            _ => format!(
                "`{uri}` is not a `mailto:` URI; give the address that receives the reports as `mailto:ADDRESS`, e.g. `mailto:reports@example.com`"
            ),
        });
    };
    // `!` is the size delimiter, so it cannot also be part of the address (a literal one
    // would be percent-encoded as %21).
    let (address, max_size) = match rest.split_once('!') {
        Some((address, size)) => (address, Some(size)),
        None => (rest, None),
    };
    if let Some(size) = max_size {
        let digits = size.trim_end_matches(['k', 'm', 'g', 't']);
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || size.len() > digits.len() + 1
        {
            return Err(format!(
                "`{uri}`: `!` starts the report size limit, a number with an optional unit k, m, g or t (e.g. `mailto:{address}!10m`); a `!` in the address itself is written %21"
            ));
        }
    }
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    if let Some(bad) = local.chars().find(|c| !uri_local_char(*c)) {
        return Err(format!(
            "`{uri}`: `{bad}` cannot appear in a report URI's address; DNS tag syntax reserves `,`, `;` and `!`, and URIs allow only ASCII letters, digits and -._~$&'*+= (percent-encode anything else, e.g. %21)"
        ));
    }
    let address = MailAddress::try_from(address)?;
    Ok(ReportUri {
        address,
        max_size: max_size.map(str::to_string),
    })
}

/// Characters a `mailto:` URI may carry unencoded in the local part of a report address
/// (RFC 3986 unreserved and the sub-delimiters that DMARC and TLS-RPT do not reserve), plus
/// `%` for percent-encoded ones.
fn uri_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~$&'*+=%".contains(c)
}

impl ReportUris {
    pub fn to_tag_value(&self) -> String {
        self.0
            .iter()
            .map(|u| match &u.max_size {
                Some(size) => format!("mailto:{}!{size}", u.address),
                None => format!("mailto:{}", u.address),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// TLS-RPT report destinations (RFC 8460): `mailto:` URIs as for DMARC, without a size
/// limit, which TLS-RPT does not define.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRptUris(pub ReportUris);

impl<'de> Deserialize<'de> for TlsRptUris {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let uris = ReportUris::deserialize(d)?;
        if let Some(sized) = uris.0.iter().find(|u| u.max_size.is_some()) {
            return Err(de::Error::custom(format!(
                "`mailto:{}!{}`: TLS-RPT has no size limit (only DMARC does); write `mailto:{}`",
                sized.address,
                sized.max_size.as_deref().unwrap_or_default(),
                sized.address
            )));
        }
        Ok(TlsRptUris(uris))
    }
}

impl TlsRptUris {
    pub fn to_tag_value(&self) -> String {
        self.0.to_tag_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names() {
        for a in DkimAlgorithm::ALL {
            assert_eq!(a.as_str().parse::<DkimAlgorithm>().ok(), Some(a));
        }
        let err = "rsa-1024".parse::<DkimAlgorithm>().err();
        assert!(err.is_some_and(|e| e.contains("rsa-2048")));
    }

    #[test]
    fn alias_targets_accept_chasquid_syntax_and_lists() {
        let t: AliasTargets = serde_norway::from_str("'i, x@gmail.com'").unwrap();
        assert_eq!(t.0.len(), 2);
        let t: AliasTargets = serde_norway::from_str("[i, x@gmail.com]").unwrap();
        assert_eq!(
            t.0[1],
            AliasTarget::Address(MailAddress::try_from("x@gmail.com").unwrap())
        );
        let t: AliasTargets = serde_norway::from_str("'| /usr/bin/true'").unwrap();
        assert_eq!(t.0, vec![AliasTarget::Pipe("/usr/bin/true".into())]);
        assert!(serde_norway::from_str::<AliasTargets>("'i, | x'").is_err());
        assert!(serde_norway::from_str::<AliasTargets>("'i,,j'").is_err());
    }

    #[test]
    fn dmarc_takes_rfc_9989_tags_and_refuses_the_removed_ones_with_a_fix() {
        let d: Dmarc = serde_norway::from_str("{p: reject, np: reject, t: true}").unwrap();
        assert_eq!((d.np, d.t), (Some(DmarcPolicy::Reject), Some(true)));
        let pct = serde_norway::from_str::<Dmarc>("{p: reject, pct: 50}")
            .unwrap_err()
            .to_string();
        assert!(
            pct.contains("RFC 9989") && pct.contains("`t: true`"),
            "{pct}"
        );
        for removed in ["rf: afrf", "ri: 86400"] {
            let e = serde_norway::from_str::<Dmarc>(&format!("{{p: reject, {removed}}}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("removed from DMARC by RFC 9989"),
                "{removed}: {e}"
            );
        }
        assert!(serde_norway::from_str::<Dmarc>("{p: reject, np: maybe}").is_err());
        assert!(serde_norway::from_str::<Dmarc>("{p: reject, t: y}").is_err());
    }

    #[test]
    fn dmarc_failure_options_accept_numbers_and_combinations() {
        let d: Dmarc = serde_norway::from_str("{p: reject, fo: 1}").unwrap();
        assert_eq!(d.fo, Some(FailureOptions("1".into())));
        let d: Dmarc = serde_norway::from_str("{p: reject, fo: 'd:s'}").unwrap();
        assert_eq!(d.fo, Some(FailureOptions("d:s".into())));
        assert!(serde_norway::from_str::<Dmarc>("{p: reject, fo: 2}").is_err());
        let d: Dmarc =
            serde_norway::from_str("{p: reject, rua: 'mailto:a@example.com!10m'}").unwrap();
        assert_eq!(d.rua.unwrap().to_tag_value(), "mailto:a@example.com!10m");
        for bad in [
            "mailto:a@example.com!",
            "mailto:a@example.com!10x",
            "mailto:a@example.com!m",
            "mailto:a!b@example.com",
            "mailto:a@example.com!1!2",
            "mailto:ü@example.com",
        ] {
            let yaml = format!("{{p: reject, rua: '{bad}'}}");
            assert!(serde_norway::from_str::<Dmarc>(&yaml).is_err(), "{bad}");
        }
        assert!(
            serde_norway::from_str::<Dmarc>("{p: reject, rua: rua@example.com}")
                .unwrap_err()
                .to_string()
                .contains("mailto:")
        );
    }
}
