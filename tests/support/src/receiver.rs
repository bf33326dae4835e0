//! The receiver standing in for Gmail, independent of mailbake: Postfix (Debian's package) with
//! rspamd (Debian 12: 3.4) as its milter, both started inside the test network with a private
//! configuration, queue and log in a temp dir, and killed on drop. No system daemon is used.
//!
//! Who judges what:
//! - **rspamd** computes SPF, DKIM (every signature, RSA and Ed25519), DMARC and ARC and writes
//!   them as the `Authentication-Results` header (its `milter_headers` module), plus
//!   `X-Spamd-Result` with every symbol it found.
//! - **Postfix** resolves the client's address to a name and that name back to the address
//!   (forward-confirmed reverse DNS) and writes the result into its `Received` header:
//!   `from HELO (NAME [ADDR])`, NAME being `unknown` unless the PTR name's A/AAAA records
//!   contain the address. rspamd 3.4 writes no `iprev` into `Authentication-Results` (its
//!   `lua_auth_results` knows only spf, dkim, dmarc, arc) and its own `RDNS_NONE` symbol only
//!   says whether a PTR exists at all, so the iprev verdict is Postfix's: see
//!   [`Delivered::iprev`].
//!
//! Postfix delivers every accepted message into one Maildir (`virtual` with a static map);
//! each file starts with `Return-Path` (the envelope sender) and `X-Original-To` (the
//! envelope recipient), followed by Postfix's `Received`, rspamd's headers and the message.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::inbox::header_values;
use crate::netns::Netns;

/// Where rspamd's milter listens, inside the namespace (its own loopback).
const MILTER: &str = "127.0.0.1:11332";
/// How long [`Receiver::start`] waits for Postfix and rspamd to answer.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Identity and addresses of a [`Receiver`].
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Postfix's `myhostname` (greeting, `Received ... by NAME`).
    pub hostname: String,
    /// The domains it accepts mail for (anything else is relaying: refused).
    pub domains: Vec<String>,
    /// Addresses Postfix listens on (port 25).
    pub addresses: Vec<String>,
    /// The DNS server rspamd asks (Postfix uses the namespace's resolv.conf, the same one).
    pub resolver: String,
    /// STARTTLS certificate and key offered to senders (a sender that checks nothing still
    /// gets an encrypted session, as with Gmail).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// One message as the receiver stored it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub path: PathBuf,
    pub data: Vec<u8>,
    /// The receiver's authserv-id: the name its `Authentication-Results` starts with
    /// (rspamd takes Postfix's `myhostname`, which the milter passes as the MTA's name).
    pub authserv_id: String,
}

impl Delivered {
    /// Unfolded values of header `name`, in order (the receiver's own come first).
    pub fn headers(&self, name: &str) -> Vec<String> {
        header_values(&self.data, name)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// The envelope sender (Postfix's `Return-Path`), without angle brackets.
    pub fn mail_from(&self) -> String {
        self.header("Return-Path")
            .unwrap_or_default()
            .trim_matches(['<', '>'])
            .to_string()
    }

    /// The envelope recipient (Postfix's `X-Original-To`).
    pub fn rcpt_to(&self) -> String {
        self.header("X-Original-To").unwrap_or_default()
    }

    /// The receiver's own `Authentication-Results`: the one whose authserv-id is the
    /// receiver's (RFC 8601 §2.5), wherever it stands. Any other, whatever its position, is
    /// someone else's claim; empty if the receiver wrote none.
    pub fn authentication_results(&self) -> String {
        self.headers("Authentication-Results")
            .into_iter()
            .find(|v| {
                let id = v.split(';').next().unwrap_or_default();
                // An authserv-id may be followed by a version number (RFC 8601 §2.2).
                id.split_whitespace()
                    .next()
                    .is_some_and(|id| id.eq_ignore_ascii_case(&self.authserv_id))
            })
            .unwrap_or_default()
    }

    /// The `Received` header Postfix wrote (the topmost).
    pub fn received(&self) -> String {
        self.header("Received").unwrap_or_default()
    }

    /// The verdicts of `Authentication-Results` for `method` (`spf`, `dkim`, `dmarc`, `arc`),
    /// each with its properties: `["pass smtp.mailfrom=example.com", …]`.
    pub fn verdicts(&self, method: &str) -> Vec<String> {
        let ar = self.authentication_results();
        ar.split(';')
            .map(str::trim)
            .filter_map(|part| {
                let (m, rest) = part.split_once('=')?;
                (m.trim() == method).then(|| rest.trim().to_string())
            })
            .collect()
    }

    /// The client as Postfix recorded it: (verified name or `unknown`, address).
    pub fn client(&self) -> (String, String) {
        let received = self.received();
        // "from HELO (NAME [ADDR]) ..." — ADDR is `IPv6:…` for IPv6 clients.
        let inner = received
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inner, _)| inner)
            .unwrap_or_default();
        let (name, addr) = inner.split_once(" [").unwrap_or((inner, ""));
        (
            name.trim().to_string(),
            addr.trim_end_matches(']')
                .trim_start_matches("IPv6:")
                .to_string(),
        )
    }

    /// iprev from Postfix's forward-confirmed reverse lookup: `pass` with the name, or `fail`
    /// when Postfix could not confirm one (`unknown`).
    pub fn iprev(&self) -> String {
        match self.client() {
            (name, _) if name == "unknown" || name.is_empty() => "fail".into(),
            (name, _) => format!("pass policy.iprev={name}"),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A running Postfix + rspamd; dropping it stops both.
pub struct Receiver {
    net: Netns,
    dir: tempfile::TempDir,
    postfix: Option<Child>,
    rspamd: Option<Child>,
    /// Where Postfix listens (port 25 on each), to know when it answers again.
    addresses: Vec<String>,
    /// Its `Authentication-Results` name (Postfix's `myhostname`).
    authserv_id: String,
}

impl Receiver {
    /// Writes both configurations, starts rspamd and Postfix in `net`, and returns once
    /// Postfix answers SMTP on every address and rspamd's milter port is open.
    pub fn start(net: &Netns, opts: &ReceiverOptions) -> Result<Receiver, String> {
        let dir = tempfile::Builder::new()
            .prefix("mailbake-receiver-")
            .tempdir()
            .map_err(|e| format!("temp dir for the receiver: {e}"))?;
        // Postfix's daemons run as `postfix` and must reach the queue and the mailbox.
        set_mode(dir.path(), 0o755)?;
        let mut receiver = Receiver {
            net: net.clone(),
            dir,
            postfix: None,
            rspamd: None,
            addresses: opts.addresses.clone(),
            authserv_id: opts.hostname.clone(),
        };
        receiver.write_rspamd(opts)?;
        receiver.write_postfix(opts)?;
        receiver.rspamd = Some(receiver.spawn(
            "rspamd",
            receiver.net.command("rspamd").args(receiver.rspamd_args()),
        )?);
        receiver.wait_for("rspamd's milter", MILTER)?;
        receiver.start_postfix()?;
        Ok(receiver)
    }

    /// Takes the receiver off the network: Postfix stops, so connections to its addresses
    /// are refused and senders keep their mail queued. Its mail and queue stay;
    /// [`Receiver::resume`] brings it back.
    pub fn pause(&mut self) -> Result<(), String> {
        let Some(child) = self.postfix.take() else {
            return Ok(());
        };
        self.postfix_stop();
        stop(child);
        for a in self.addresses.clone() {
            self.wait_for_refusal(&socket(&a, 25))?;
        }
        Ok(())
    }

    /// Starts Postfix again after [`Receiver::pause`]; returns once it answers on every
    /// address.
    pub fn resume(&mut self) -> Result<(), String> {
        if self.postfix.is_some() {
            return Ok(());
        }
        self.start_postfix()
    }

    fn start_postfix(&mut self) -> Result<(), String> {
        let conf = self.postfix_dir();
        self.postfix = Some(
            self.spawn(
                "postfix",
                self.net
                    .command("postfix")
                    .arg("-c")
                    .arg(&conf)
                    .arg("start-fg"),
            )?,
        );
        for a in self.addresses.clone() {
            self.wait_for("Postfix", &socket(&a, 25))?;
        }
        Ok(())
    }

    /// `postfix stop`: master ends its children in order.
    fn postfix_stop(&self) {
        let _ = self
            .net
            .command("postfix")
            .arg("-c")
            .arg(self.postfix_dir())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits until nothing accepts connections on `addr` inside the namespace.
    fn wait_for_refusal(&self, addr: &str) -> Result<(), String> {
        let target: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad address {addr}: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while self
            .net
            .enter(|| std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok())
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "Postfix still answers on {addr} {START_TIMEOUT:?} after `postfix stop`\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn postfix_dir(&self) -> PathBuf {
        self.path("postfix")
    }

    fn maildir(&self) -> PathBuf {
        self.path("mail/inbox")
    }

    fn rspamd_args(&self) -> Vec<String> {
        let var = |k: &str, v: &str| format!("--var={k}={}", self.path(v).display());
        vec![
            "-f".into(),
            // Root in a throw-away namespace; -i accepts that for the workers too.
            "-u".into(),
            "root".into(),
            "-g".into(),
            "root".into(),
            "-i".into(),
            "-c".into(),
            "/etc/rspamd/rspamd.conf".into(),
            var("LOCAL_CONFDIR", "rspamd"),
            var("DBDIR", "rspamd-db"),
            var("RUNDIR", "rspamd-run"),
            var("LOGDIR", "log"),
        ]
    }

    fn write_rspamd(&self, opts: &ReceiverOptions) -> Result<(), String> {
        for d in [
            "rspamd/local.d",
            "rspamd/override.d",
            "rspamd-db",
            "rspamd-run",
            "log",
        ] {
            mkdir(&self.path(d))?;
        }
        let local = self.path("rspamd/local.d");
        let files: [(&str, String); 5] = [
            // Its resolver is the test DNS; hyperscan off: compiling its cache would cost
            // minutes of CPU at every start of a throw-away instance.
            (
                "options.inc",
                format!(
                    "dns {{ nameserver = [\"{}\"]; timeout = 2s; retransmits = 2; }}\n\
                     disable_hyperscan = true;\n\
                     local_addrs = [];\n",
                    socket(&opts.resolver, 53)
                ),
            ),
            // The verdicts into the message, for every message (none is local or authenticated
            // here), and every symbol as evidence.
            (
                "milter_headers.conf",
                "use = [\"authentication-results\", \"x-spamd-result\"];\n\
                 skip_local = false;\nskip_authenticated = false;\n\
                 extended_spam_headers = false;\n"
                    .into(),
            ),
            // The receiver must deliver what it judges, so the test can read the verdicts:
            // no action ever rejects, greylists or rewrites.
            (
                "actions.conf",
                "reject = 10000;\nadd_header = 9000;\nrewrite_subject = 9500;\ngreylist = 8000;\n"
                    .into(),
            ),
            ("logging.inc", "level = \"info\";\n".into()),
            // The proxy scans by itself (no round trip to a normal worker).
            (
                "worker-proxy.inc",
                format!(
                    "bind_socket = \"{MILTER}\";\nupstream \"local\" {{ default = yes; self_scan = yes; }}\n"
                ),
            ),
        ];
        for (name, text) in files {
            write(&local.join(name), &text)?;
        }
        // Modules that would only ask the (absent) internet or need redis: off.
        for module in [
            "rbl",
            "fuzzy_check",
            "phishing",
            "asn",
            "neural",
            "url_redirector",
            "replies",
            "ratelimit",
            "greylist",
            "dkim_signing",
        ] {
            write(&local.join(format!("{module}.conf")), "enabled = false;\n")?;
        }
        // Only the proxy (milter) worker: no normal worker, controller or fuzzy storage.
        for worker in [
            "worker-normal.inc",
            "worker-controller.inc",
            "worker-fuzzy.inc",
        ] {
            write(
                &self.path("rspamd/override.d").join(worker),
                "enabled = false;\ncount = 0;\n",
            )?;
        }
        Ok(())
    }

    fn write_postfix(&self, opts: &ReceiverOptions) -> Result<(), String> {
        let conf = self.postfix_dir();
        mkdir(&conf)?;
        let mail = self.path("mail");
        mkdir(&mail)?;
        let (uid, gid) = postfix_ids()?;
        chown(&mail, uid, gid)?;
        // postfix-script fills the queue directory in, but it must exist (owned by root).
        mkdir(&self.path("queue"))?;
        mkdir(&self.path("data"))?;
        chown(&self.path("data"), uid, gid)?;
        let d = |p: &Path| p.display().to_string();
        let mut main = String::new();
        let mut set = |k: &str, v: &str| {
            let _ = writeln!(main, "{k} = {v}");
        };
        set("compatibility_level", "3.6");
        set("queue_directory", &d(&self.path("queue")));
        set("data_directory", &d(&self.path("data")));
        set("maillog_file", &d(&self.path("log/postfix.log")));
        // Postfix logs only below these prefixes (default /var, /dev/stdout).
        set("maillog_file_prefixes", &d(self.dir.path()));
        set("myhostname", &opts.hostname);
        set("mydestination", "");
        set("inet_interfaces", &opts.addresses.join(", "));
        set("inet_protocols", "all");
        set("mynetworks", "127.0.0.0/8");
        set("smtpd_relay_restrictions", "reject_unauth_destination");
        set("virtual_mailbox_domains", &opts.domains.join(" "));
        set("virtual_mailbox_base", &d(&mail));
        // Every recipient into one Maildir (the trailing slash means Maildir).
        set("virtual_mailbox_maps", "static:inbox/");
        set("virtual_uid_maps", &format!("static:{uid}"));
        set("virtual_gid_maps", &format!("static:{gid}"));
        set("enable_original_recipient", "yes");
        set("alias_maps", "");
        set("alias_database", "");
        set("smtpd_milters", &format!("inet:{MILTER}"));
        // rspamd down must not let a message through unjudged.
        set("milter_default_action", "tempfail");
        set("milter_protocol", "6");
        set("smtputf8_enable", "no");
        set("biff", "no");
        if let Some((cert, key)) = &opts.tls {
            set("smtpd_tls_security_level", "may");
            set("smtpd_tls_cert_file", &d(cert));
            set("smtpd_tls_key_file", &d(key));
            set("smtpd_tls_received_header", "yes");
        }
        write(&conf.join("main.cf"), &main)?;
        // Only the services an inbound-only MTA needs; nothing chrooted (the queue is in a
        // temp dir, not /var/spool/postfix with its copies of /etc).
        let services = [
            "smtp      inet  n - n - - smtpd",
            "pickup    unix  n - n 60 1 pickup",
            "cleanup   unix  n - n - 0 cleanup",
            "qmgr      unix  n - n 300 1 qmgr",
            "tlsmgr    unix  - - n 1000? 1 tlsmgr",
            "rewrite   unix  - - n - - trivial-rewrite",
            "bounce    unix  - - n - 0 bounce",
            "defer     unix  - - n - 0 bounce",
            "trace     unix  - - n - 0 bounce",
            "verify    unix  - - n - 1 verify",
            "flush     unix  n - n 1000? 0 flush",
            "proxymap  unix  - - n - - proxymap",
            "showq     unix  n - n - - showq",
            "error     unix  - - n - - error",
            "retry     unix  - - n - - error",
            "discard   unix  - - n - - discard",
            "virtual   unix  - n n - - virtual",
            "anvil     unix  - - n - 1 anvil",
            "scache    unix  - - n - 1 scache",
            "postlog   unix-dgram n - n - 1 postlogd",
        ];
        write(&conf.join("master.cf"), &(services.join("\n") + "\n"))?;
        Ok(())
    }

    fn spawn(&self, what: &str, cmd: &mut Command) -> Result<Child, String> {
        let log = self.path(&format!("log/{what}.out"));
        // Appended: a resumed Postfix keeps the log of its first run as evidence.
        let file = fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        // rspamd -f stays in the foreground; `postfix start-fg` is a shell whose master is its
        // child: both die with the test through the shell, and master (and every worker) is
        // swept with the test network's namespace if the test was killed.
        crate::process::dies_with_test(cmd)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {what} (apt-get install postfix rspamd): {e}"))
    }

    /// Waits until something accepts TCP connections on `addr` inside the namespace.
    fn wait_for(&mut self, what: &str, addr: &str) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let target: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad address {addr}: {e}"))?;
        loop {
            let up = self.net.enter(|| {
                std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
            });
            if up {
                return Ok(());
            }
            let mut exited = None;
            for (name, child) in [("rspamd", &mut self.rspamd), ("postfix", &mut self.postfix)] {
                if let Some(c) = child
                    && let Ok(Some(status)) = c.try_wait()
                {
                    exited = Some(format!("{name} exited ({status})"));
                }
            }
            if let Some(exited) = exited {
                return Err(format!(
                    "{exited} before {what} answered on {addr}\n{}",
                    self.logs()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{what} did not answer on {addr} within {START_TIMEOUT:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Postfix's and rspamd's logs (for a failing test's message).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["postfix.out", "postfix.log", "rspamd.out", "rspamd.log"] {
            let text = fs::read_to_string(self.path("log").join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            let _ = writeln!(out, "--- receiver {name} (last lines) ---");
            for l in tail.into_iter().rev() {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }

    /// Every message stored so far, oldest first.
    pub fn messages(&self) -> Vec<Delivered> {
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|d| fs::read_dir(self.maildir().join(d)).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .collect();
        // Maildir names start with the delivery time in seconds, then a sequence.
        files.sort();
        files
            .into_iter()
            .filter_map(|path| {
                let data = fs::read(&path).ok()?;
                Some(Delivered {
                    path,
                    data,
                    authserv_id: self.authserv_id.clone(),
                })
            })
            .collect()
    }

    /// Waits until a stored message satisfies `pred`; on timeout the error lists what arrived
    /// and the receiver's logs.
    pub fn wait_for_message(
        &self,
        pred: impl Fn(&Delivered) -> bool,
        timeout: Duration,
    ) -> Result<Delivered, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| pred(m)) {
                return Ok(m);
            }
            if Instant::now() > deadline {
                let arrived: Vec<String> = self
                    .messages()
                    .iter()
                    .map(|m| {
                        format!(
                            "  {} -> {}: {}",
                            m.mail_from(),
                            m.rcpt_to(),
                            m.header("Subject").unwrap_or_default()
                        )
                    })
                    .collect();
                return Err(format!(
                    "the receiver stored no matching message within {timeout:?}; stored:\n{}\n{}",
                    arrived.join("\n"),
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // `postfix stop` ends master and its children in order; then make sure.
        self.postfix_stop();
        for child in [self.postfix.take(), self.rspamd.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
    }
}

/// SIGTERM, up to 10 s, then SIGKILL; reaps the child.
fn stop(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `ip:port` with brackets for IPv6.
fn socket(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn postfix_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postfix"])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "no `postfix` user: apt-get install postfix".to_string())
    };
    Ok((id("-u")?, id("-g")?))
}

fn mkdir(p: &Path) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn write(p: &Path, text: &str) -> Result<(), String> {
    fs::write(p, text).map_err(|e| format!("write {}: {e}", p.display()))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", p.display()))
}
