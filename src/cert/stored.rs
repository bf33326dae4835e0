//! What a stored certificate is good for: its names, its expiry, and whether it must be
//! renewed, by the same rule lego applies on the host.

use std::collections::BTreeSet;

/// Renew within this many days of expiry: the host's `acme-renew` default
/// (`ACME_RENEW_DAYS`) and lego's own `--days` default.
pub const RENEW_DAYS: i64 = 30;

/// Now, in seconds since 1970: what certificate expiry and queue ages are compared with
/// (a clock set before 1970 reads as 0).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The facts of a certificate chain's leaf that decide whether it can be served or reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCertificate {
    /// Its DNS names, lowercase.
    pub names: BTreeSet<String>,
    /// Seconds since 1970.
    pub not_after: i64,
    /// For people: `2031-11-30 12:00:00 UTC`-style.
    pub not_after_text: String,
    /// Hex, colon-separated (as openssl prints it).
    pub serial: String,
}

impl StoredCertificate {
    /// Reads the first certificate of a PEM chain (lego's `.crt`: leaf first).
    pub fn parse(pem: &[u8]) -> Result<StoredCertificate, String> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem)
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let cert = block
            .parse_x509()
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
        let mut names = BTreeSet::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                    names.insert(n.to_ascii_lowercase());
                }
            }
        }
        let validity = cert.validity();
        Ok(StoredCertificate {
            names,
            not_after: validity.not_after.timestamp(),
            not_after_text: validity.not_after.to_string(),
            serial: cert.raw_serial_as_string(),
        })
    }

    /// Whole days left at `now` (seconds since 1970), truncated towards zero as lego computes
    /// them (`int(time.Until(NotAfter).Hours() / 24)`), so both sides agree on the day.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now) / 86_400
    }

    pub fn expired(&self, now: i64) -> bool {
        self.not_after <= now
    }

    /// Whether it carries exactly `wanted` (any case, any order).
    pub fn names_match(&self, wanted: &[String]) -> bool {
        let wanted: BTreeSet<String> = wanted.iter().map(|n| n.to_ascii_lowercase()).collect();
        wanted == self.names
    }
}

/// What `mailbake cert` has to do for one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The stored certificate is good for more than [`RENEW_DAYS`] days: nothing to do, and
    /// the CA is not contacted.
    Valid { days_left: i64 },
    /// It is within the renewal window: `lego renew`.
    Renew { days_left: i64 },
    /// No usable certificate (or no account): `lego run`, which registers the account when
    /// there is none. The reason is shown to the operator.
    Obtain { reason: String },
}

/// Decides from the stored state. `stored` is the parse result of the host's stored chain
/// (`None`: there is none); `account` whether the store has the site's account.
pub fn assess(
    stored: Option<&Result<StoredCertificate, String>>,
    account: bool,
    wanted: &[String],
    now: i64,
    renew_days: i64,
) -> Freshness {
    if !account {
        return Freshness::Obtain {
            reason: "the store has no ACME account for this directory and e-mail yet".into(),
        };
    }
    let cert = match stored {
        None => {
            return Freshness::Obtain {
                reason: "the store has no certificate for this host yet".into(),
            };
        }
        Some(Err(e)) => {
            return Freshness::Obtain {
                reason: format!("the stored certificate is unreadable ({e})"),
            };
        }
        Some(Ok(cert)) => cert,
    };
    if !cert.names_match(wanted) {
        let have: Vec<&str> = cert.names.iter().map(String::as_str).collect();
        return Freshness::Obtain {
            reason: format!(
                "the stored certificate names {} but the site asks for {}",
                have.join(", "),
                wanted.join(", ")
            ),
        };
    }
    let days_left = cert.days_left(now);
    if days_left <= renew_days {
        Freshness::Renew { days_left }
    } else {
        Freshness::Valid { days_left }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    /// A certificate for `names` that expires at 2030-01-31 00:00 UTC.
    fn pem(names: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem().into_bytes()
    }

    fn expiry() -> i64 {
        rcgen::date_time_ymd(2030, 1, 31).unix_timestamp()
    }

    fn wanted() -> Vec<String> {
        vec!["smtp.example.com".into(), "*.example.com".into()]
    }

    #[test]
    fn reads_names_and_expiry_of_the_leaf() {
        let c = StoredCertificate::parse(&pem(&["Smtp.Example.com", "*.example.com"])).unwrap();
        assert!(c.names_match(&wanted()));
        assert_eq!(c.not_after, expiry());
        assert_eq!(c.days_left(expiry() - 90 * DAY), 90);
        assert!(!c.serial.is_empty());
        assert!(StoredCertificate::parse(b"not a certificate").is_err());
    }

    #[test]
    fn valid_beyond_the_window_renewed_within_it() {
        let c = StoredCertificate::parse(&pem(&["smtp.example.com", "*.example.com"]));
        let at = |days_before: i64| {
            assess(
                Some(&c),
                true,
                &wanted(),
                expiry() - days_before,
                RENEW_DAYS,
            )
        };
        assert_eq!(at(90 * DAY), Freshness::Valid { days_left: 90 });
        assert_eq!(at(31 * DAY), Freshness::Valid { days_left: 31 });
        // 30 whole days left or fewer: lego's `--days 30` renews, so does `cert`.
        assert_eq!(at(31 * DAY - 1), Freshness::Renew { days_left: 30 });
        assert_eq!(at(10 * DAY), Freshness::Renew { days_left: 10 });
        assert_eq!(at(-3 * DAY), Freshness::Renew { days_left: -3 });
    }

    #[test]
    fn other_names_no_account_or_no_certificate_obtain_anew() {
        let now = expiry() - 90 * DAY;
        let other = StoredCertificate::parse(&pem(&["smtp.example.com"]));
        match assess(Some(&other), true, &wanted(), now, RENEW_DAYS) {
            Freshness::Obtain { reason } => assert!(reason.contains("asks for"), "{reason}"),
            f => panic!("{f:?}"),
        }
        let good = StoredCertificate::parse(&pem(&["smtp.example.com", "*.example.com"]));
        assert!(matches!(
            assess(Some(&good), false, &wanted(), now, RENEW_DAYS),
            Freshness::Obtain { .. }
        ));
        assert!(matches!(
            assess(None, true, &wanted(), now, RENEW_DAYS),
            Freshness::Obtain { .. }
        ));
        let bad = Err("garbage".to_string());
        assert!(matches!(
            assess(Some(&bad), true, &wanted(), now, RENEW_DAYS),
            Freshness::Obtain { .. }
        ));
    }

    #[test]
    fn the_day_count_truncates_like_lego() {
        let c = StoredCertificate {
            names: BTreeSet::new(),
            not_after: 100 * DAY + DAY / 2,
            not_after_text: String::new(),
            serial: String::new(),
        };
        assert_eq!(c.days_left(70 * DAY), 30);
        assert_eq!(c.days_left(70 * DAY - DAY / 4), 30);
        assert!(!c.expired(100 * DAY));
        assert!(c.expired(101 * DAY));
    }
}
