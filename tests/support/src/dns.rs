//! Authoritative DNS for the test domains: the real BIND `named` (Debian package `bind9`), run in
//! the foreground with a configuration generated in a private temp dir. Real `named` rather than
//! a toy server so the guest's resolver meets the same answers (TXT splitting, TCP fallback,
//! NXDOMAIN with SOA) it meets on the internet.
//!
//! Nothing recursive: the guest must be pointed at this server for the test zones only.
//!
//! It runs on the host's loopback ([`Dns::start`], for tests without a guest) or inside the
//! test network on the addresses of [`crate::topology::DNS4`] and `DNS6` ([`Dns::start_in`]).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::netns::Netns;
use crate::topology::DNS4;

/// How long [`Dns::start`] waits for every zone to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Dns::replace_zone`] waits for named to load the new file.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// A TSIG key that may send RFC 2136 updates to a zone (`allow-update { key NAME; }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Key name as clients (nsupdate -y, lego's RFC 2136 provider) give it, e.g. `acme-key`.
    pub name: String,
    /// `hmac-sha256` and friends, as BIND spells them.
    pub algorithm: String,
    /// Base64 secret.
    pub secret: String,
}

impl TsigKey {
    /// A fresh `hmac-sha256` key with 32 random bytes.
    pub fn generate(name: &str) -> Result<TsigKey, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no randomness for a TSIG key: {e}"))?;
        Ok(TsigKey {
            name: name.to_string(),
            algorithm: "hmac-sha256".into(),
            secret: base64::engine::general_purpose::STANDARD.encode(secret),
        })
    }

    /// The `-y` argument of `nsupdate`/`dig`: `algorithm:name:secret`.
    pub fn nsupdate_arg(&self) -> String {
        format!("{}:{}:{}", self.algorithm, self.name, self.secret)
    }
}

/// One primary zone.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Zone name, with or without the trailing dot (`example.test`).
    pub origin: String,
    /// A complete zone file (with SOA and NS); see [`zone_text`] to wrap bare records.
    pub text: String,
    /// Allow dynamic updates signed with this key.
    pub update_key: Option<TsigKey>,
}

impl Zone {
    /// A zone from a complete zone file.
    pub fn new(origin: &str, text: impl Into<String>) -> Zone {
        Zone {
            origin: origin.trim_end_matches('.').to_string(),
            text: text.into(),
            update_key: None,
        }
    }

    /// A zone from bare record lines, wrapped by [`zone_text`].
    pub fn from_records<S: AsRef<str>>(origin: &str, records: &[S]) -> Zone {
        Zone::new(origin, zone_text(origin, records))
    }

    /// Accept RFC 2136 updates signed with `key`.
    pub fn allow_update(mut self, key: TsigKey) -> Zone {
        self.update_key = Some(key);
        self
    }
}

/// A complete zone file for `origin` around `records` (zone-file lines, names relative to the
/// origin or absolute with a trailing dot): `$ORIGIN`, `$TTL 300`, a SOA and one NS
/// `mailbake-ns.<origin>` with the address [`DNS4`] (named refuses an in-zone NS
/// without an address). The short TTLs keep a guest from caching across a record change.
pub fn zone_text<S: AsRef<str>>(origin: &str, records: &[S]) -> String {
    let origin = format!("{}.", origin.trim_end_matches('.'));
    let mut text = format!(
        "$ORIGIN {origin}\n$TTL 300\n\
         @ IN SOA mailbake-ns.{origin} hostmaster.{origin} ( 1 3600 600 86400 60 )\n\
         @ IN NS mailbake-ns.{origin}\n\
         mailbake-ns IN A {DNS4}\n"
    );
    for r in records {
        let _ = writeln!(text, "{}", r.as_ref());
    }
    text
}

/// A running `named`; dropping it kills named.
pub struct Dns {
    child: Option<Child>,
    /// Where named listens; the first is the one [`Dns::dig`] and the readiness check ask.
    addrs: Vec<SocketAddr>,
    /// The test network it runs in, if any.
    netns: Option<Netns>,
    /// The zones as served now, in named.conf's order (file `zone<i>.db` is zone i).
    zones: Mutex<Vec<Zone>>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Dns {
    /// Starts `named` on `addr` (UDP and TCP; `127.0.0.1:53` for a guest) serving `zones`, and
    /// returns once every zone answers its SOA authoritatively. Fails with the reason and named's
    /// log if the port is taken, a zone does not load or named does not answer in time.
    pub fn start(addr: SocketAddr, zones: &[Zone]) -> Result<Dns, String> {
        Dns::start_at(None, vec![addr], zones)
    }

    /// Starts `named` inside the test network on `addrs` (all on one port), as [`Dns::start`].
    pub fn start_in(net: &Netns, addrs: &[SocketAddr], zones: &[Zone]) -> Result<Dns, String> {
        Dns::start_at(Some(net.clone()), addrs.to_vec(), zones)
    }

    fn start_at(
        netns: Option<Netns>,
        addrs: Vec<SocketAddr>,
        zones: &[Zone],
    ) -> Result<Dns, String> {
        if zones.is_empty() {
            return Err("Dns::start: no zones given".into());
        }
        if addrs.is_empty() || addrs.iter().any(|a| a.port() != addrs[0].port()) {
            return Err(format!(
                "Dns::start: addresses on one port needed, not {addrs:?}"
            ));
        }
        within(netns.as_ref(), || {
            addrs.iter().try_for_each(|a| port_is_free(*a))
        })?;
        let dir = tempfile::Builder::new()
            .prefix("mailbake-dns-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir for named: {e}"))?;
        let conf = dir.path().join("named.conf");
        fs::write(&conf, named_conf(dir.path(), &addrs, zones)?)
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        for (i, z) in zones.iter().enumerate() {
            let path = dir.path().join(zone_file_name(i));
            fs::write(&path, &z.text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }

        // named-checkconf -z loads every zone the way named would and says which line is wrong;
        // named itself would only log it and serve SERVFAIL.
        let check = Command::new("named-checkconf")
            .arg("-z")
            .arg(&conf)
            .output()
            .map_err(|e| format!("cannot run named-checkconf (package bind9): {e}"))?;
        if !check.status.success() {
            return Err(format!(
                "named-checkconf -z {} rejected the configuration or a zone:\n{}{}\n--- named.conf ---\n{}",
                conf.display(),
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr),
                fs::read_to_string(&conf).unwrap_or_default()
            ));
        }

        let log = dir.path().join("named.log");
        let log_file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| format!("cannot duplicate {}: {e}", log.display()))?;
        let mut cmd = match &netns {
            Some(net) => net.command("named"),
            None => Command::new("named"),
        };
        // -g: foreground, log to stderr (our file); -u root: this machine runs tests as root and
        // the temp dir is root's; -n 2: a test server needs no thread per CPU.
        cmd.args(["-g", "-u", "root", "-n", "2", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        // If the test process dies without running Drop (abort, SIGKILL), named dies too
        // instead of holding port 53 for the next run. The signal fires when the *thread* that
        // started named exits, so keep a Dns in the thread (test) that uses it.
        let child = crate::process::dies_with_test(&mut cmd)
            .spawn()
            .map_err(|e| format!("cannot run named (package bind9): {e}"))?;
        let mut dns = Dns {
            child: Some(child),
            addrs,
            netns,
            zones: Mutex::new(zones.to_vec()),
            log,
            dir,
        };
        dns.wait_ready(zones)?;
        Ok(dns)
    }

    fn wait_ready(&mut self, zones: &[Zone]) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        for z in zones {
            loop {
                if let Some(child) = self.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!(
                        "named exited ({status}) before answering for {}:\n{}",
                        z.origin,
                        self.log()
                    ));
                }
                let addr = self.addr();
                let last = match within(self.netns.as_ref(), || soa_query(addr, &z.origin)) {
                    Ok(()) => break,
                    Err(e) => e,
                };
                if Instant::now() > deadline {
                    return Err(format!(
                        "named on {} did not answer the SOA of {} within {:?} (last: {last}):\n{}",
                        self.addr(),
                        z.origin,
                        START_TIMEOUT,
                        self.log()
                    ));
                }
                sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Where named listens (the first address).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// named's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// The temp dir holding named.conf, the zone files and their update journals.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The zone `origin` as named serves it now (as started, or as last replaced).
    pub fn zone(&self, origin: &str) -> Result<Zone, String> {
        let origin = origin.trim_end_matches('.');
        self.served()
            .iter()
            .find(|z| z.origin == origin)
            .cloned()
            .ok_or_else(|| format!("Dns::zone: named serves no zone {origin}"))
    }

    /// Serves `zone` (a zone given at start, by its origin) with its new text: the file is
    /// checked with `named-checkzone`, swapped in by rename, and named reloads it on SIGHUP
    /// (no rndc channel: `controls {}`). Returns once named's log says the zone was loaded
    /// again, so the next query gets the new records. A bad zone is refused and the old one
    /// stays served. Not for zones taking RFC 2136 updates: named keeps those in a journal.
    pub fn replace_zone(&self, zone: Zone) -> Result<(), String> {
        let mut zones = self.served();
        let index = zones
            .iter()
            .position(|z| z.origin == zone.origin)
            .ok_or_else(|| format!("Dns::replace_zone: named serves no zone {}", zone.origin))?;
        if zones[index].update_key.is_some() || zone.update_key.is_some() {
            return Err(format!(
                "Dns::replace_zone: {} takes dynamic updates; change it with nsupdate instead",
                zone.origin
            ));
        }
        let file = self.dir.path().join(zone_file_name(index));
        let staged = file.with_extension("new");
        fs::write(&staged, &zone.text)
            .map_err(|e| format!("cannot write {}: {e}", staged.display()))?;
        let check = Command::new("named-checkzone")
            .arg(&zone.origin)
            .arg(&staged)
            .output()
            .map_err(|e| format!("cannot run named-checkzone (package bind9): {e}"))?;
        if !check.status.success() {
            let _ = fs::remove_file(&staged);
            return Err(format!(
                "named-checkzone {} rejected the new zone:\n{}{}\n--- zone ---\n{}",
                zone.origin,
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr),
                zone.text
            ));
        }
        let loaded = format!("zone {}/IN: loaded serial", zone.origin);
        let before = self.log().matches(&loaded).count();
        fs::rename(&staged, &file).map_err(|e| format!("cannot rename {}: {e}", file.display()))?;
        self.hangup()?;
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        while self.log().matches(&loaded).count() == before {
            if Instant::now() > deadline {
                return Err(format!(
                    "named did not reload {} within {RELOAD_TIMEOUT:?}:\n{}",
                    zone.origin,
                    self.log()
                ));
            }
            sleep(Duration::from_millis(100));
        }
        zones[index] = zone;
        Ok(())
    }

    fn served(&self) -> std::sync::MutexGuard<'_, Vec<Zone>> {
        // A panic while holding the lock leaves the list as it was: still usable.
        self.zones.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGHUP: named re-reads its configuration and every zone file that changed.
    fn hangup(&self) -> Result<(), String> {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .ok_or("named is not running")?;
        // SAFETY: kill(2) on our own child (named itself: `ip netns exec` execs it), not
        // reaped while the Dns exists.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            return Err(format!(
                "cannot signal named ({pid}): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// `dig +short` against this server: the answer's records, one string each (TXT as
    /// dig prints it, quoted strings separated by spaces). Needs `dig` (bind9-dnsutils).
    pub fn dig(&self, name: &str, rtype: &str) -> Result<Vec<String>, String> {
        let addr = self.addr();
        let mut dig = match &self.netns {
            Some(net) => net.command("dig"),
            None => Command::new("dig"),
        };
        let out = dig
            .args(["+short", "+norecurse", "+time=2", "+tries=2"])
            .arg(format!("@{}", addr.ip()))
            .args(["-p", &addr.port().to_string(), name, rtype])
            .output()
            .map_err(|e| format!("cannot run dig (package bind9-dnsutils): {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout.starts_with(";;") {
            return Err(format!(
                "dig {name} {rtype} @{} failed ({}): {stdout}{}\nnamed log:\n{}",
                addr,
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ));
        }
        Ok(stdout.lines().map(str::to_string).collect())
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `f` inside `netns` when given, else here.
fn within<R: Send>(netns: Option<&Netns>, f: impl FnOnce() -> R + Send) -> R {
    match netns {
        Some(net) => net.enter(f),
        None => f(),
    }
}

fn zone_file_name(i: usize) -> String {
    format!("zone{i}.db")
}

/// Checks both UDP and TCP on `addr` are free so a taken port 53 (systemd-resolved, dnsmasq, a
/// named left over) is reported as such instead of as a named that never answers.
fn port_is_free(addr: SocketAddr) -> Result<(), String> {
    let hint = "another DNS server (systemd-resolved, dnsmasq, a leftover named) may hold it; \
                `ss -lunpt` shows which";
    UdpSocket::bind(addr).map_err(|e| format!("UDP {addr} is taken ({e}); {hint}"))?;
    TcpListener::bind(addr).map_err(|e| format!("TCP {addr} is taken ({e}); {hint}"))?;
    Ok(())
}

fn quoted(s: &str) -> Result<String, String> {
    if s.contains(['"', '\\', '\n', ';']) {
        return Err(format!("{s:?} cannot be quoted in named.conf"));
    }
    Ok(format!("\"{s}\""))
}

fn named_conf(dir: &Path, addrs: &[SocketAddr], zones: &[Zone]) -> Result<String, String> {
    let d = dir
        .to_str()
        .ok_or_else(|| format!("temp dir {} is not UTF-8", dir.display()))?;
    let list = |v6: bool| {
        let ips: Vec<String> = addrs
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(|a| format!("{};", a.ip()))
            .collect();
        if ips.is_empty() {
            "{ none; }".to_string()
        } else {
            format!("{{ {} }}", ips.join(" "))
        }
    };
    let (v4, v6) = (list(false), list(true));
    let port = addrs[0].port();
    // Everything named would write lives in the temp dir; no rndc channel (controls {}), no
    // recursion and no DNSSEC validation: it only answers for its own zones.
    let mut conf = format!(
        "options {{\n\
         \tdirectory {dir};\n\
         \tpid-file {pid};\n\
         \tsession-keyfile {session};\n\
         \tmanaged-keys-directory {dir};\n\
         \tlisten-on port {port} {v4};\n\
         \tlisten-on-v6 port {port} {v6};\n\
         \trecursion no;\n\
         \tallow-query {{ any; }};\n\
         \tdnssec-validation no;\n\
         \tnotify no;\n\
         }};\n\
         controls {{ }};\n",
        dir = quoted(d)?,
        pid = quoted(&format!("{d}/named.pid"))?,
        session = quoted(&format!("{d}/session.key"))?,
    );
    let mut keys_written: Vec<&str> = Vec::new();
    for z in zones {
        if let Some(k) = &z.update_key
            && !keys_written.contains(&k.name.as_str())
        {
            let _ = writeln!(
                conf,
                "key {} {{ algorithm {}; secret {}; }};",
                quoted(&k.name)?,
                k.algorithm,
                quoted(&k.secret)?
            );
            keys_written.push(&k.name);
        }
    }
    for (i, z) in zones.iter().enumerate() {
        let update = match &z.update_key {
            Some(k) => format!("allow-update {{ key {}; }};", quoted(&k.name)?),
            None => "allow-update { none; };".into(),
        };
        let _ = writeln!(
            conf,
            "zone {} {{ type primary; file {}; {update} }};",
            quoted(z.origin.trim_end_matches('.'))?,
            quoted(&zone_file_name(i))?
        );
    }
    Ok(conf)
}

/// One UDP query for `origin`'s SOA; Ok when named answers it authoritatively (the zone is
/// loaded). A hand-built packet so readiness does not depend on dig.
fn soa_query(addr: SocketAddr, origin: &str) -> Result<(), String> {
    let id: u16 = 0x6d62;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x00, 0x00]); // standard query, no recursion wanted
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in origin.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..64).contains(l))
            .ok_or_else(|| format!("bad label {label:?} in {origin}"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 6, 0, 1]); // SOA, IN
    let bind = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("UDP socket: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| format!("UDP timeout: {e}"))?;
    sock.send_to(&q, addr)
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock
        .recv_from(&mut buf)
        .map_err(|e| format!("no answer: {e}"))?;
    if n < 12 || buf[0..2] != id.to_be_bytes() {
        return Err("short or foreign answer".into());
    }
    let aa = buf[2] & 0x04 != 0;
    let rcode = buf[3] & 0x0f;
    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
    if rcode != 0 || !aa || ancount == 0 {
        return Err(format!(
            "answer not authoritative yet (rcode {rcode}, aa {aa}, {ancount} answers)"
        ));
    }
    Ok(())
}
