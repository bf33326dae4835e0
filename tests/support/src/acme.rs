//! A site that gets its certificates by ACME DNS-01 in the test network: pebble as the CA
//! ([`crate::pebble`]), BIND serving `example.com` open to RFC 2136 updates signed with a TSIG
//! key the secrets store's `acme.env` holds. Used by the ACME boot test and by the tests of
//! `mailbake cert` that need no guest.

use std::path::Path;
use std::process::Output;

use crate::dns::{Dns, TsigKey, Zone};
use crate::internet::{dns_addrs, site_dns};
use crate::netns::Netns;
use crate::pebble::Pebble;
use crate::site::{FQDN, TestSite, hosts_yaml};
use crate::topology::DNS4;
use crate::{mailbake_bin, ok, output};

/// The password of `i@example.com`, the site's one user.
pub const PASSWORD: &str = "submission password 42";

/// The site file: one host (see [`hosts_yaml`]), ACME through rfc2136 against pebble,
/// trusting pebble's directory CA, lego's propagation check asking the test DNS.
pub fn site_yaml(ssh_key: &str) -> String {
    format!(
        r#"site: acmetest
domains:
  example.com:
    users: [i]
{hosts}tls:
  acme:
    provider: rfc2136
    email: ops@example.com
    directory: {directory}
    ca_certificates: [pebble/ca.pem]
    resolvers: ["{DNS4}:53"]
ssh:
  authorized_keys: ["{ssh_key}"]
"#,
        hosts = hosts_yaml(),
        directory = Pebble::directory(),
    )
}

/// The site, its TSIG key and pebble (not started yet).
pub struct AcmeSite {
    pub site: TestSite,
    pub tsig: TsigKey,
    pub pebble: Pebble,
}

impl AcmeSite {
    /// Writes the site into `dir/site` with its user and `acme.env`.
    pub fn create(net: &Netns, dir: &Path) -> AcmeSite {
        let site = TestSite::create(&dir.join("site"));
        let pebble = Pebble::prepare(net, &site.dir.join("pebble"));
        site.write(&site_yaml(&site.public_key()));
        site.add_user("example.com", "i", PASSWORD);
        let tsig = ok(TsigKey::generate("acme-key"));
        site.store()
            .write_secret(mailbake::secrets::ACME_ENV, acme_env(&tsig).as_bytes())
            .expect("write acme.env");
        AcmeSite { site, tsig, pebble }
    }

    /// BIND with the zones of the build in `out` (example.com open to updates signed with the
    /// TSIG key) plus `extra`, then pebble.
    pub fn start_internet(&mut self, net: &Netns, out: &Path, extra: Vec<Zone>) -> Dns {
        let (zones, _) = site_dns(out);
        let mut zones: Vec<Zone> = zones
            .into_iter()
            .map(|z| {
                if z.origin == "example.com" {
                    z.allow_update(self.tsig.clone())
                } else {
                    z
                }
            })
            .collect();
        zones.extend(extra);
        let dns = ok(Dns::start_in(net, &dns_addrs(), &zones));
        assert_eq!(
            ok(dns.dig(FQDN, "A")),
            [crate::topology::GUEST4],
            "the zone mailbake wrote is served"
        );
        self.pebble.start();
        dns
    }

    /// `mailbake cert SITE ARGS…` from inside the test network (where pebble and the DNS
    /// are), whatever its outcome.
    pub fn cert(&self, net: &Netns, args: &[&str]) -> Output {
        output(
            net.command(mailbake_bin())
                .arg("cert")
                .arg(self.site.path())
                .arg("--secrets")
                .arg(self.site.secrets())
                .args(args),
        )
    }
}

/// lego's rfc2136 variables for `tsig`. Short propagation and sequence intervals: lego's
/// defaults wait a minute between the names of one certificate, which only makes tests slower.
pub fn acme_env(tsig: &TsigKey) -> String {
    format!(
        "RFC2136_NAMESERVER={DNS4}:53\nRFC2136_TSIG_KEY={}\nRFC2136_TSIG_SECRET={}\nRFC2136_TSIG_ALGORITHM={}.\n\
         RFC2136_PROPAGATION_TIMEOUT=120\nRFC2136_POLLING_INTERVAL=2\nRFC2136_SEQUENCE_INTERVAL=1\nRFC2136_TTL=30\n",
        tsig.name, tsig.secret, tsig.algorithm
    )
}
