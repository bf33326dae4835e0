//! The site file's `chasquid:` section: chasquid.conf settings shared by every host.
//!
//! Each value is checked against what the shipped chasquid (1.19) does with it, because
//! chasquid itself is lenient in ways that hurt: `0` for a size or a count silently means
//! "the default", `give_up_send_after: "0s"` bounces every message on its first failure, and
//! the monitoring server listens wherever it is told although its pages list senders and
//! recipients. Messages quote the offending value in backticks so the site parser can point
//! at it.

use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// chasquid.conf settings that are the same for every host of the site.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChasquidSettings {
    /// Largest message accepted, in MiB.
    #[serde(
        default = "default_max_data_size_mb",
        deserialize_with = "max_data_size_mb"
    )]
    pub max_data_size_mb: u32,
    /// How many messages the queue holds before new mail is refused (temporarily).
    #[serde(
        default = "default_max_queue_items",
        deserialize_with = "max_queue_items"
    )]
    pub max_queue_items: u32,
    /// How long delivery is retried before the message bounces.
    #[serde(default)]
    pub give_up_send_after: GiveUpAfter,
    /// Where chasquid's monitoring HTTP server listens; off when absent.
    #[serde(default)]
    pub monitoring_address: Option<MonitoringAddress>,
}

impl Default for ChasquidSettings {
    fn default() -> Self {
        ChasquidSettings {
            max_data_size_mb: default_max_data_size_mb(),
            max_queue_items: default_max_queue_items(),
            give_up_send_after: GiveUpAfter::default(),
            monitoring_address: None,
        }
    }
}

/// chasquid's own default.
fn default_max_data_size_mb() -> u32 {
    50
}

/// chasquid keeps every queued message in memory, whole: the limit times the largest message
/// is what a full queue can take.
const MAX_DATA_SIZE_MB: i64 = 1024;

fn max_data_size_mb<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(
        d,
        "max_data_size_mb",
        MAX_DATA_SIZE_MB,
        "chasquid reads 0 as its default of 50 MiB, so 0 cannot mean \"no limit\"; \
         give the size in MiB, e.g. 50",
        "chasquid holds each message in memory while it receives and queues it",
    )
}

/// chasquid's own default.
fn default_max_queue_items() -> u32 {
    200
}

const MAX_QUEUE_ITEMS: i64 = 10_000;

fn max_queue_items<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    bounded(
        d,
        "max_queue_items",
        MAX_QUEUE_ITEMS,
        "chasquid reads 0 as its default of 200, so 0 cannot mean \"no queue\"; \
         give a number of messages, e.g. 200",
        "chasquid keeps every queued message in memory",
    )
}

/// An integer from 1 to `max`. Read as a signed number so that `-1` gets this message rather
/// than serde's type error.
fn bounded<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    max: i64,
    why_not_zero: &str,
    why_max: &str,
) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    if n == 0 {
        return Err(de::Error::custom(format!(
            "{key} `0` is refused: {why_not_zero}"
        )));
    }
    if !(1..=max).contains(&n) {
        return Err(de::Error::custom(format!(
            "{key} `{n}` is out of range: give 1 to {max} ({why_max})"
        )));
    }
    u32::try_from(n).map_err(|_| de::Error::custom(format!("{key} `{n}` is out of range")))
}

/// `give_up_send_after`: a Go duration of whole hours, minutes and seconds (`48h`, `1h30m`),
/// between [`GiveUpAfter::MIN_SECONDS`] and [`GiveUpAfter::MAX_SECONDS`].
///
/// chasquid parses the value with Go's `time.ParseDuration`; this accepts the subset that
/// makes sense for a retry period and that Go parses to the same value, so the file never
/// carries a value chasquid would refuse at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GiveUpAfter {
    text: String,
    seconds: u64,
}

impl GiveUpAfter {
    /// Shorter than this, a receiver that is down for an hour (a reboot, a maintenance
    /// window) makes mail bounce: chasquid retries after 1, 5, 10 and then every 20 minutes.
    pub const MIN_SECONDS: u64 = 3600;
    /// 30 days: longer only keeps a message in memory after its sender has given up on it.
    pub const MAX_SECONDS: u64 = 30 * 24 * 3600;

    /// The value as written, which is what chasquid.conf gets.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn seconds(&self) -> u64 {
        self.seconds
    }
}

impl Default for GiveUpAfter {
    /// chasquid's own default.
    fn default() -> Self {
        GiveUpAfter {
            text: "20h".into(),
            seconds: 20 * 3600,
        }
    }
}

impl TryFrom<String> for GiveUpAfter {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let syntax = || {
            format!(
                "give_up_send_after `{text}` is not a duration chasquid reads: write whole \
                 hours, minutes and seconds such as `48h`, `90m` or `1h30m` (Go's syntax; \
                 days are not a unit, 5 days is `120h`)"
            )
        };
        let mut seconds: u64 = 0;
        let mut digits = String::new();
        let mut last_unit = 0;
        for c in text.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            // Units in decreasing order, each at most once: `1h30m`, not `30m1h` or `1h1h`
            // (Go reads those too, but they only hide a typo).
            let (rank, factor) = match c {
                'h' => (3, 3600),
                'm' => (2, 60),
                's' => (1, 1),
                _ => return Err(syntax()),
            };
            if digits.is_empty() || (last_unit != 0 && rank >= last_unit) {
                return Err(syntax());
            }
            let n: u64 = digits.parse().map_err(|_| syntax())?;
            seconds = n
                .checked_mul(factor)
                .and_then(|s| seconds.checked_add(s))
                .ok_or_else(syntax)?;
            digits.clear();
            last_unit = rank;
        }
        if !digits.is_empty() || last_unit == 0 {
            return Err(syntax());
        }
        if !(Self::MIN_SECONDS..=Self::MAX_SECONDS).contains(&seconds) {
            return Err(format!(
                "give_up_send_after `{text}` is out of range: give 1h to 720h (30 days). \
                 Shorter, mail bounces whenever a receiver is down for a while; RFC 5321 \
                 suggests 4 to 5 days (`96h` to `120h`)"
            ));
        }
        Ok(GiveUpAfter { text, seconds })
    }
}

impl From<GiveUpAfter> for String {
    fn from(value: GiveUpAfter) -> String {
        value.text
    }
}

impl fmt::Display for GiveUpAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `monitoring_address`: a loopback IP address and port (`127.0.0.1:1099`, `[::1]:1099`).
///
/// chasquid's monitoring server is plain HTTP without authentication, and its pages show the
/// queue (senders and recipients) and debugging traces: reachable from anywhere but the host
/// itself, it leaks who writes to whom. Reach it through an SSH tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MonitoringAddress(SocketAddr);

impl MonitoringAddress {
    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }
}

impl TryFrom<String> for MonitoringAddress {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!(
                "monitoring_address `{text}` is not an IP address and port: write \
                 `127.0.0.1:1099` or `[::1]:1099` (a name such as localhost is refused, \
                 it could resolve to another address)"
            )
        })?;
        let loopback = match addr {
            SocketAddr::V4(v4) => v4.ip().is_loopback(),
            // Exactly ::1: an IPv4-mapped 127.0.0.1 or a scope id would be read differently.
            SocketAddr::V6(v6) => v6.ip().is_loopback() && v6.scope_id() == 0,
        };
        if !loopback {
            return Err(format!(
                "monitoring_address `{text}` is not a loopback address: the monitoring pages \
                 list senders and recipients without any authentication, so only 127.0.0.0/8 \
                 or ::1 is allowed (reach it through an SSH tunnel)"
            ));
        }
        // chasquid's own ports are taken by its sockets on every address.
        if matches!(addr.port(), 0 | 25 | 465 | 587) {
            return Err(format!(
                "monitoring_address `{text}` needs a free, fixed port: not 0, and not 25, 465 \
                 or 587, which chasquid listens on; e.g. 1099"
            ));
        }
        Ok(MonitoringAddress(addr))
    }
}

impl From<MonitoringAddress> for String {
    fn from(value: MonitoringAddress) -> String {
        value.0.to_string()
    }
}

impl fmt::Display for MonitoringAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn give_up(s: &str) -> Result<GiveUpAfter, String> {
        GiveUpAfter::try_from(s.to_string())
    }

    fn monitoring(s: &str) -> Result<MonitoringAddress, String> {
        MonitoringAddress::try_from(s.to_string())
    }

    #[test]
    fn durations_in_go_syntax_are_read_in_seconds() {
        for (text, seconds) in [
            ("20h", 72_000),
            ("1h", 3600),
            ("90m", 5400),
            ("1h30m", 5400),
            ("120h", 432_000),
            ("2h0m30s", 7230),
            ("720h", 2_592_000),
        ] {
            let d = give_up(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(d.seconds(), seconds, "{text}");
            assert_eq!(d.as_str(), text);
        }
    }

    #[test]
    fn durations_chasquid_would_refuse_or_misread_are_refused() {
        // Days, fractions, signs, spaces, units out of order or twice, no unit, overflow.
        for text in [
            "",
            "2d",
            "1.5h",
            "-1h",
            "+1h",
            "1 h",
            "h",
            "30m1h",
            "1h1h",
            "3600",
            "1h30",
            "99999999999999999999h",
            "1H",
        ] {
            let err = give_up(text).expect_err(text);
            assert!(
                err.contains("not a duration chasquid reads"),
                "{text}: {err}"
            );
            assert!(err.contains(&format!("`{text}`")), "{err}");
        }
    }

    #[test]
    fn durations_outside_the_bounds_are_refused() {
        for text in ["0s", "59m59s", "721h"] {
            let err = give_up(text).expect_err(text);
            assert!(err.contains("out of range"), "{text}: {err}");
        }
    }

    #[test]
    fn the_monitoring_address_is_loopback_only() {
        for ok in ["127.0.0.1:1099", "127.8.9.10:8080", "[::1]:1099"] {
            assert_eq!(monitoring(ok).expect(ok).to_string(), ok);
        }
        for public in [
            "0.0.0.0:1099",
            "[::]:1099",
            "203.0.113.10:1099",
            "10.0.0.1:1099",
            "[::ffff:127.0.0.1]:1099",
            "[2001:db8::1]:1099",
            "[fe80::1%2]:1099",
        ] {
            let err = monitoring(public).expect_err(public);
            assert!(err.contains("not a loopback address"), "{public}: {err}");
        }
        for bad in ["localhost:1099", "127.0.0.1", ":1099", "::1:1099"] {
            let err = monitoring(bad).expect_err(bad);
            assert!(err.contains("not an IP address and port"), "{bad}: {err}");
        }
        for taken in ["127.0.0.1:0", "127.0.0.1:25", "[::1]:587", "127.0.0.1:465"] {
            let err = monitoring(taken).expect_err(taken);
            assert!(err.contains("free, fixed port"), "{taken}: {err}");
        }
    }

    #[test]
    fn sizes_and_counts_refuse_zero_and_huge_values() {
        let parse = |yaml: &str| serde_norway::from_str::<ChasquidSettings>(yaml);
        let defaults = parse("{}").expect("defaults");
        assert_eq!(
            (defaults.max_data_size_mb, defaults.max_queue_items),
            (50, 200)
        );
        assert_eq!(defaults.give_up_send_after.as_str(), "20h");
        assert!(defaults.monitoring_address.is_none());
        for (yaml, fragment) in [
            (
                "max_data_size_mb: 0",
                "chasquid reads 0 as its default of 50 MiB",
            ),
            ("max_data_size_mb: -5", "out of range: give 1 to 1024"),
            ("max_data_size_mb: 1025", "out of range: give 1 to 1024"),
            (
                "max_queue_items: 0",
                "chasquid reads 0 as its default of 200",
            ),
            ("max_queue_items: 10001", "out of range: give 1 to 10000"),
        ] {
            let err = parse(yaml).expect_err(yaml).to_string();
            assert!(err.contains(fragment), "{yaml}: {err}");
        }
        let set = parse("{max_data_size_mb: 1024, max_queue_items: 1}").expect("bounds");
        assert_eq!((set.max_data_size_mb, set.max_queue_items), (1024, 1));
    }
}
