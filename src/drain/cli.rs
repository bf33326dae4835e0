//! The `mailbake drain` command: one SSH session running the host-side script, then the
//! report of what is left and, with `--export`, a copy of it.

use std::io::{Read as _, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::queue::{QueueItem, is_item_name};
use super::{DrainError, REMOTE_SCRIPT, shell};
use crate::output::{self, OutputFile};
use crate::outside;
use crate::site::{self, DomainName, Host};

/// Longest `--timeout`: a drain is something an operator waits for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// What the session may take beyond `--timeout`: SSH set-up, closing the ports, restarting
/// chasquid, sending back the remaining items.
const SESSION_SLACK: Duration = Duration::from_secs(180);

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// The site file (YAML).
    pub site: PathBuf,
    /// The host to drain (a name under `hosts:` in the site file).
    #[arg(long, value_name = "HOST")]
    pub host: String,
    /// Close submission (587, 465) too, not only port 25.
    #[arg(long)]
    pub all: bool,
    /// How long to wait for the queue to empty: seconds, or a duration like 90s, 10m, 1h30m.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Copy the messages still queued at the end into DIR (chasquid's own queue files), to put
    /// into the next host's queue; the drain then succeeds.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Address to connect to instead of the host's fqdn.
    #[arg(long, value_name = "ADDRESS")]
    pub connect: Option<String>,
    /// Private key for SSH [default: ssh's own: ssh-agent, ~/.ssh/id_*].
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,
    /// An extra ssh `-o` option, e.g. StrictHostKeyChecking=accept-new (repeatable).
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub ssh_options: Vec<String>,
}

/// `90`, `90s`, `10m`, `1h30m`: whole seconds, at least one, at most a day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration; write seconds or e.g. 90s, 10m, 1h30m");
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        total = total.saturating_add(number.parse::<u64>().map_err(|_| bad())?);
    } else if total == 0 && text.trim().is_empty() {
        return Err(bad());
    }
    let d = Duration::from_secs(total);
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!("`{text}`: give between 1s and 24h"));
    }
    Ok(d)
}

pub fn run(args: &DrainArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let loaded = site::load(&args.site)?;
    let site = &loaded.site;
    let (_, host) = site::find_host(&loaded, &args.host).map_err(DrainError::from)?;
    // Everything that can be checked here is checked before the host is touched: the
    // drain closes its port 25.
    if let Some(dir) = &args.export {
        output::check_destination(dir, output::OutputKind::DrainExport)?;
    }
    if let Some(key) = &args.ssh_key {
        check_ssh_key(key)?;
    }
    let target = match &args.connect {
        Some(value) => connect_target(value)?,
        None => host.fqdn.to_string(),
    };
    let user = site.ssh.user.to_string();
    let listing = remote_drain(args, host, &target, &user)?;
    let items = read_listing(&listing)?;
    report(out, args, host, &items);
    if items.is_empty() {
        return Ok(());
    }
    if let Some(dir) = &args.export {
        let files: Vec<OutputFile> = items
            .iter()
            .map(|(name, bytes, _)| OutputFile::secret(name.clone(), bytes.clone()))
            .collect();
        output::write_dir(dir, output::OutputKind::DrainExport, &files)?;
        let _ = writeln!(
            out,
            "exported {} queue item(s) to {}: put them into the next host's queue (docs/upgrade.md)",
            items.len(),
            dir.display()
        );
        return Ok(());
    }
    Err(DrainError::NotEmpty {
        count: items.len(),
        fqdn: host.fqdn.to_string(),
    }
    .into())
}

/// `--ssh-key` must be a file mailbake can read: ssh only warns about a missing one and then
/// tries the agent's keys, so a typo would otherwise surface as an unrelated login failure
/// after the drain began.
fn check_ssh_key(key: &std::path::Path) -> anyhow::Result<()> {
    let readable = std::fs::metadata(key).and_then(|m| {
        if m.is_file() {
            std::fs::File::open(key).map(drop)
        } else {
            Err(std::io::Error::other("not a regular file"))
        }
    });
    readable.map_err(|e| {
        anyhow::anyhow!(
            "--ssh-key {}: {e}; nothing was done on the host\n  fix: give the private key file (e.g. ~/.ssh/id_ed25519), or leave --ssh-key out to use ssh-agent and ssh's defaults",
            key.display()
        )
    })
}

/// `--connect`: an IP address or a host name, never something ssh could read as an option.
fn connect_target(value: &str) -> Result<String, DrainError> {
    if value.parse::<IpAddr>().is_ok() {
        return Ok(value.to_string());
    }
    DomainName::try_from(value)
        .map(|d| d.to_string())
        .map_err(|_| DrainError::BadConnect {
            value: value.to_string(),
        })
}

/// Runs the host-side script in one SSH session; returns its stdout (a tar, or nothing).
fn remote_drain(
    args: &DrainArgs,
    host: &Host,
    target: &str,
    user: &str,
) -> Result<Vec<u8>, DrainError> {
    let seconds = args.timeout.as_secs().to_string();
    let mode = if args.all { "all" } else { "smtp" };
    let remote = shell::command_line(&[
        "sudo",
        "-n",
        "sh",
        "-c",
        REMOTE_SCRIPT,
        "mailbake-drain",
        mode,
        &seconds,
        host.fqdn.as_str(),
    ])?;
    let mut ssh = Command::new("ssh");
    ssh.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
        .args([
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]);
    if let Some(key) = &args.ssh_key {
        ssh.arg("-i").arg(key).args(["-o", "IdentitiesOnly=yes"]);
    }
    for option in &args.ssh_options {
        ssh.arg("-o").arg(option);
    }
    ssh.args(["-l", user, "--", target, &remote]);
    ssh.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = ssh.spawn().map_err(DrainError::NoSsh)?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| DrainError::NoSsh(std::io::Error::other("ssh's output is not connected")))?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    let limit = args.timeout + SESSION_SLACK;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DrainError::Stalled {
                    target: target.to_string(),
                    seconds: limit.as_secs(),
                });
            }
        }
    };
    let listing = reader
        .join()
        .map_err(|_| DrainError::BadListing("the reader of ssh's output failed".into()))?
        .map_err(|e| DrainError::BadListing(e.to_string()))?;
    match status.code() {
        Some(0) => Ok(listing),
        Some(255) => Err(DrainError::Ssh {
            target: target.to_string(),
            user: user.to_string(),
            status: status.to_string(),
        }),
        _ => Err(DrainError::Remote {
            target: target.to_string(),
            status: status.to_string(),
        }),
    }
}

/// The items of the host's tar: file name, raw bytes (exported as they are) and parse.
fn read_listing(listing: &[u8]) -> Result<Vec<(String, Vec<u8>, QueueItem)>, DrainError> {
    let mut items = Vec::new();
    if listing.is_empty() {
        return Ok(items);
    }
    let bad = |e: std::io::Error| DrainError::BadListing(e.to_string());
    let mut archive = tar::Archive::new(listing);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        // chasquid's own file names only: never a path, a newline or a control character.
        if !is_item_name(&name) {
            return Err(DrainError::BadListing(format!(
                "unexpected entry `{}` (not a chasquid queue file name)",
                outside::line(&name)
            )));
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(bad)?;
        let item = QueueItem::parse(&name, &bytes).map_err(DrainError::BadListing)?;
        items.push((name, bytes, item));
    }
    Ok(items)
}

fn report(
    out: &mut dyn Write,
    args: &DrainArgs,
    host: &Host,
    items: &[(String, Vec<u8>, QueueItem)],
) {
    let closed = if args.all {
        "ports 25, 587 and 465 closed"
    } else {
        "port 25 closed, submission (587, 465) open"
    };
    if items.is_empty() {
        let _ = writeln!(out, "{}: {closed}; the queue is empty", host.fqdn);
        return;
    }
    let _ = writeln!(
        out,
        "{}: {closed}; {} message(s) still queued after {} s:",
        host.fqdn,
        items.len(),
        args.timeout.as_secs()
    );
    let now = crate::cert::unix_now();
    for (name, _, item) in items {
        let age = item
            .created_at
            .map(|t| format!(", queued {} min ago", (now - t).max(0) / 60))
            .unwrap_or_default();
        // Everything here comes from the host's queue files (and from remote servers'
        // replies, in the last error): escaped, so none of it acts on the terminal.
        let _ = writeln!(
            out,
            "  {}  from <{}>, {} bytes{age}",
            outside::line(name),
            outside::line(&item.from),
            item.size
        );
        for r in &item.recipients {
            let error = if r.last_failure.is_empty() {
                "not tried yet".to_string()
            } else {
                format!("last error: {}", outside::line(&r.last_failure))
            };
            let _ = writeln!(
                out,
                "    to <{}>: {}; {error}",
                outside::line(&r.address),
                outside::line(&r.status.to_lowercase())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        for bad in ["", "0", "0s", "ten", "5x", "m", "25h", "1.5m", "-3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connect_takes_addresses_and_names_only() {
        assert_eq!(connect_target("203.0.113.10").unwrap(), "203.0.113.10");
        assert_eq!(connect_target("2001:db8::10").unwrap(), "2001:db8::10");
        assert_eq!(
            connect_target("Smtp.Example.com").unwrap(),
            "smtp.example.com"
        );
        for bad in ["-oProxyCommand=x", "a b", "", "x;y"] {
            assert!(connect_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_listing_is_a_tar_of_queue_items() {
        let mut tar = tar::Builder::new(Vec::new());
        let item =
            b"ID: \"abc\"\nfrom: \"a@example.com\"\nrcpt: {\n  address: \"b@example.net\"\n}\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(item.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, "m:abc", &item[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let items = read_listing(&bytes).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].0, "m:abc");
        assert_eq!(items[0].1, item);
        assert_eq!(items[0].2.recipients[0].address, "b@example.net");
        assert!(read_listing(b"").unwrap().is_empty());

        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_cksum();
        tar.append_data(&mut header, "etc-passwd", &b"x"[..])
            .unwrap();
        assert!(read_listing(&tar.into_inner().unwrap()).is_err());
    }

    /// A tar holding one queue item `item` under `name`.
    fn listing(name: &str, item: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(item.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, item).unwrap();
        tar.into_inner().unwrap()
    }

    #[test]
    fn only_chasquid_queue_file_names_are_taken() {
        let item = b"from: \"a@example.com\"\nrcpt: {\n  address: \"b@example.net\"\n}\n";
        assert!(read_listing(&listing("m:Ab-_9=", item)).is_ok());
        for name in [
            "m:a\nb",
            "m:\x1b[2Jx",
            "m:",
            "m:a b",
            "m:a\tb",
            "n:abc",
            "m:a.b",
        ] {
            let err = read_listing(&listing(name, item))
                .expect_err(name)
                .to_string();
            assert!(
                err.contains("not a chasquid queue file name"),
                "{name:?}: {err}"
            );
            assert!(!err.chars().any(char::is_control), "{name:?}: {err:?}");
        }
    }

    #[test]
    fn the_report_shows_what_the_queue_holds_escaped() {
        let hostile = "\\033]0;owned\\007\\033[2J\\r\\nALL DELIVERED";
        let item = format!(
            "from: \"{hostile}@example.com\"\nrcpt: {{\n  address: \"{hostile}\"\n  status: PENDING\n  last_failure_message: \"{hostile}\"\n}}\n"
        );
        let items = read_listing(&listing("m:abc", item.as_bytes())).unwrap();
        let site = crate::site::parse(
            std::path::Path::new("site.yaml"),
            "site: s\ndomains:\n  example.com: {}\nhosts:\n  mx1:\n    fqdn: smtp.example.com\n    ipv4: 203.0.113.10\n",
        )
        .unwrap();
        let host = site.hosts.iter().next().unwrap().1;
        let args = DrainArgs {
            site: "site.yaml".into(),
            host: "mx1".into(),
            all: false,
            timeout: Duration::from_secs(60),
            export: None,
            connect: None,
            ssh_key: None,
            ssh_options: Vec::new(),
        };
        let mut out = Vec::new();
        report(&mut out, &args, host, &items);
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "raw control characters in:\n{text:?}"
        );
        assert!(!text.contains("\nALL DELIVERED"), "a forged line:\n{text}");
        assert!(text.contains("\\u{1b}]0;owned\\u{7}"), "{text}");
    }
}
