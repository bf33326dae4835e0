//! `mailbake send-test SITE --from ADDR --to ADDR [--host H] [--port 465|587]`: submits one
//! test message the way a mail client (or Gmail's "send mail as") does, with SMTP AUTH over
//! implicit TLS (465) or STARTTLS (587), and prints what the operator needs to check the
//! result: the server's certificate, a transcript, the server's reply and a Message-ID to
//! search for at the receiving end.
//!
//! The certificate is verified before the password is sent (for the host's fqdn, against the
//! system store or `--ca`); the password never appears in argv, the transcript or an error.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use mail_send::mail_builder::MessageBuilder;
use mail_send::{Credentials, SmtpClient};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::secrets::{Password, read_password_from};
use crate::site::{self, HostName, MailAddress};
use crate::verify::probe::{self, Transcript};
use crate::verify::tls::{CertSummary, Trust};

/// The environment variable send-test reads the password from (after `--password-stdin`).
pub const PASSWORD_ENV: &str = "MAILBAKE_SMTP_PASSWORD";

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Port {
    /// Implicit TLS (RFC 8314), what the walkthrough's test script uses.
    #[value(name = "465")]
    Submissions,
    /// STARTTLS.
    #[value(name = "587")]
    Submission,
}

impl Port {
    pub fn number(self) -> u16 {
        match self {
            Port::Submissions => 465,
            Port::Submission => 587,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SendTestArgs {
    /// The site file (YAML).
    pub site: PathBuf,
    /// The sender: a user of the site (it is also the login name).
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub from: MailAddress,
    /// The recipient, e.g. the Gmail address the site forwards to.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub to: MailAddress,
    /// The host to submit to [default: the site's only host].
    #[arg(long, value_name = "H", value_parser = parse_host)]
    pub host: Option<HostName>,
    #[arg(long, value_enum, default_value_t = Port::Submissions)]
    pub port: Port,
    /// Connect here instead of the host's fqdn (the certificate is still checked for the
    /// fqdn); the port defaults to --port.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub connect: Option<String>,
    /// Trust exactly the CA certificates in this PEM file instead of the system store.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Read the password from standard input (else $MAILBAKE_SMTP_PASSWORD, else a prompt).
    #[arg(long)]
    pub password_stdin: bool,
}

fn parse_address(text: &str) -> Result<MailAddress, String> {
    MailAddress::try_from(text)
}

fn parse_host(text: &str) -> Result<HostName, String> {
    HostName::try_from(text)
}

pub fn run(args: &SendTestArgs) -> anyhow::Result<()> {
    let loaded = site::load(&args.site)?;
    let site = &loaded.site;
    let (host_name, host) = match &args.host {
        Some(h) => site.hosts.get_key_value(h).ok_or_else(|| {
            anyhow!(
                "no host `{h}` in {}; its hosts are: {}",
                args.site.display(),
                host_list(site)
            )
        })?,
        None if site.hosts.len() == 1 => site
            .hosts
            .iter()
            .next()
            .ok_or_else(|| anyhow!("the site has no host"))?,
        None => bail!(
            "{} has several hosts ({}); pass --host H",
            args.site.display(),
            host_list(site)
        ),
    };
    require_user(site, &args.from, &args.site)?;
    let port = args.port.number();
    let targets: Vec<SocketAddr> = match &args.connect {
        Some(text) => vec![parse_connect(text, port)?],
        None => Vec::new(),
    };
    let trust = match &args.ca {
        Some(path) => Trust::from_pem_file(path)?,
        None => Trust::system(),
    };
    let password = read_password(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(submit(Submission {
        fqdn: host.fqdn.to_string(),
        port: args.port,
        targets,
        trust,
        from: &args.from,
        to: &args.to,
        password: &password,
    }));
    let outcome = outcome.with_context(|| {
        format!(
            "send-test to {} ({host_name}) on port {port} failed",
            host.fqdn
        )
    })?;
    print!("{}", outcome.render());
    Ok(())
}

fn host_list(site: &site::Site) -> String {
    site.hosts
        .keys()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sender must be a user of a domain of the site: the login is the address.
fn require_user(
    site: &site::Site,
    from: &MailAddress,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let domain = site
        .domains
        .iter()
        .find(|(d, _)| d.as_str() == from.domain())
        .map(|(_, d)| d)
        .ok_or_else(|| {
            anyhow!(
                "--from {from}: {} is not a domain of {}",
                from.domain(),
                path.display()
            )
        })?;
    if domain.users.iter().any(|u| u.as_str() == from.local_part()) {
        return Ok(());
    }
    bail!(
        "--from {from}: `{}` is not a user of {} in {} (users: {}); add it under `users:` and set its password with `mailbake user add`",
        from.local_part(),
        from.domain(),
        path.display(),
        domain
            .users
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn parse_connect(text: &str, port: u16) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    bail!(
        "--connect {text}: write an IP address with an optional port, e.g. 127.0.0.1:4650 or [::1]:587"
    )
}

/// `--password-stdin`, else the environment variable, else a prompt on the terminal.
fn read_password(args: &SendTestArgs) -> anyhow::Result<Password> {
    if args.password_stdin {
        return read_password_from(std::io::stdin().lock()).context("--password-stdin");
    }
    if let Ok(value) = std::env::var(PASSWORD_ENV) {
        return Password::new(value).with_context(|| format!("${PASSWORD_ENV}"));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password: pass --password-stdin (and write it to standard input) or set ${PASSWORD_ENV}"
        );
    }
    let typed = rpassword::prompt_password(format!("SMTP password for {}: ", args.from))
        .context("reading the password from the terminal")?;
    Ok(Password::new(typed)?)
}

struct Submission<'a> {
    fqdn: String,
    port: Port,
    /// Where to connect; empty means the fqdn's addresses.
    targets: Vec<SocketAddr>,
    trust: Trust,
    from: &'a MailAddress,
    to: &'a MailAddress,
    password: &'a Password,
}

struct Outcome {
    addr: SocketAddr,
    fqdn: String,
    port: u16,
    certificate: Option<CertSummary>,
    transcript: Transcript,
    reply: smtp_proto::Response<String>,
    message_id: String,
    from: String,
    to: String,
}

impl Outcome {
    fn render(&self) -> String {
        let mut out = format!(
            "Submitted to {} ({}) on port {}.\n\nCertificate:\n",
            self.fqdn, self.addr, self.port
        );
        match &self.certificate {
            // The certificate's text, the transcript and the reply are what the server sent:
            // escaped, so none of it acts on the terminal.
            Some(c) => {
                for line in c.lines() {
                    out.push_str(&format!("  {}\n", crate::outside::line(&line)));
                }
            }
            None => out.push_str("  (not readable)\n"),
        }
        out.push_str("\nTranscript (the password and the AUTH exchange are not shown):\n");
        for line in &self.transcript.0 {
            out.push_str(&format!("  {}\n", crate::outside::line(line)));
        }
        out.push_str(&format!(
            "\nAccepted: {}\n  chasquid's 250 reply carries no queue id (the text is one of its jokes); on the host, `journalctl -u chasquid` shows the message queued under chasquid's own id, with sender {} and recipient {}.\n",
            crate::outside::line(&probe::reply_text(&self.reply)),
            self.from,
            self.to
        ));
        out.push_str(&format!(
            "\nMessage-ID: <{}>\n  In Gmail, search for rfc822msgid:{} and open \"Show original\": SPF, DKIM and DMARC should say PASS, and the Received line should show TLS (and IPv6 if the host has it).\n",
            self.message_id, self.message_id
        ));
        out
    }
}

/// A TCP connection to `addr`, or why not within [`DIAL_TIMEOUT`].
async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(anyhow!("cannot connect to {addr}: {e}")),
        Err(_) => Err(anyhow!(
            "cannot connect to {addr}: no answer within {} s",
            DIAL_TIMEOUT.as_secs()
        )),
    }
}

async fn submit(s: Submission<'_>) -> anyhow::Result<Outcome> {
    let port = s.port.number();
    let targets = if s.targets.is_empty() {
        tokio::net::lookup_host((s.fqdn.as_str(), port))
            .await
            .with_context(|| format!("cannot resolve {}", s.fqdn))?
            .collect()
    } else {
        s.targets.clone()
    };
    let config = s
        .trust
        .strict_config()
        .map_err(|why| anyhow!("no CA to verify the server with: {why}; pass --ca FILE"))?;
    let mut last = anyhow!("{} has no address", s.fqdn);
    for addr in targets {
        let stream = match connect(addr).await {
            Ok(stream) => stream,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let me = probe::ehlo_name(stream.local_addr().ok());
        let mut t = Transcript::new();
        let client = SmtpClient {
            stream,
            timeout: probe::COMMAND_TIMEOUT,
        };
        let refused = |why: String| {
            anyhow!(
                "{why}\n  the password was not sent. For a private CA pass --ca FILE; `mailbake verify SITE --only smtp` shows the certificate"
            )
        };
        let mut tls = match s.port {
            Port::Submissions => {
                let mut tls = probe::implicit_tls(client, config.clone(), &s.fqdn, &mut t)
                    .await
                    .map_err(refused)?;
                probe::greeting(&mut tls, &mut t)
                    .await
                    .map_err(|e| anyhow!(e))?;
                tls
            }
            Port::Submission => {
                let mut client = client;
                probe::greeting(&mut client, &mut t)
                    .await
                    .map_err(|e| anyhow!(e))?;
                let ehlo = probe::ehlo(&mut client, &me, &mut t)
                    .await
                    .map_err(|e| anyhow!(e))?;
                if !probe::offers_starttls(&ehlo) {
                    bail!("{addr} does not offer STARTTLS on port 587; the password was not sent");
                }
                probe::starttls(client, config.clone(), &s.fqdn, &mut t)
                    .await
                    .map_err(refused)?
            }
        };
        let certificate = probe::peer_chain(&tls)
            .first()
            .and_then(|c| CertSummary::parse(c).ok());
        let (reply, message_id) = deliver(&mut tls, &me, &s, &mut t).await?;
        probe::quit(tls, &mut t).await;
        return Ok(Outcome {
            addr,
            fqdn: s.fqdn.clone(),
            port,
            certificate,
            transcript: t,
            reply,
            message_id,
            from: s.from.to_string(),
            to: s.to.to_string(),
        });
    }
    Err(last)
}

/// EHLO, AUTH PLAIN, MAIL, RCPT, DATA over the encrypted connection; the final reply and the
/// message's Message-ID.
async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<S>,
    me: &str,
    s: &Submission<'_>,
    t: &mut Transcript,
) -> anyhow::Result<(smtp_proto::Response<String>, String)> {
    let ehlo = probe::ehlo(client, me, t).await.map_err(|e| anyhow!(e))?;
    if ehlo.auth_mechanisms & smtp_proto::AUTH_PLAIN == 0 {
        bail!(
            "the server does not offer AUTH PLAIN over TLS ({})",
            probe::capabilities(&ehlo)
        );
    }
    let login = s.from.to_string();
    let credentials = Credentials::new(login.as_str(), s.password.expose());
    let blob = credentials
        .encode(smtp_proto::AUTH_PLAIN, "")
        .map_err(|e| anyhow!("encoding the credentials: {e}"))?;
    t.note("C: AUTH PLAIN <credentials not shown>");
    let reply = client
        .cmd(format!("AUTH PLAIN {blob}\r\n"))
        .await
        .map_err(|e| anyhow!("AUTH: {e}"))?;
    drop(blob);
    t.server(&reply);
    if reply.code != 235 {
        bail!(
            "the server refused the login for {login}: {}\n  fix: check the password; `mailbake user add` sets it, and the host has it after the next build and reseed",
            probe::reply_text(&reply)
        );
    }
    for command in [
        format!("MAIL FROM:<{}>", s.from),
        format!("RCPT TO:<{}>", s.to),
    ] {
        t.note(format!("C: {command}"));
        let reply = client
            .cmd(format!("{command}\r\n"))
            .await
            .map_err(|e| anyhow!("{command}: {e}"))?;
        t.server(&reply);
        if !reply.is_positive_completion() {
            bail!(
                "the server refused `{command}`: {}",
                probe::reply_text(&reply)
            );
        }
    }
    let (message, message_id) = build_message(s)?;
    t.note(format!(
        "C: DATA ({} bytes, Message-ID <{message_id}>)",
        message.len()
    ));
    let reply = client
        .data(&message)
        .await
        .map_err(|e| anyhow!("the server did not accept the message: {e}"))?;
    t.server(&reply);
    Ok((reply, message_id))
}

/// A short text message with a Message-ID unique to this run.
fn build_message(s: &Submission<'_>) -> anyhow::Result<(Vec<u8>, String)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| anyhow!("no randomness for the Message-ID: {e}"))?;
    let message_id = format!(
        "mailbake-send-test.{now}.{}@{}",
        hex::encode(nonce),
        s.from.domain()
    );
    let body = format!(
        "This is a test message from `mailbake send-test`, submitted to {} on port {} as {}.\r\n\r\nIn Gmail, open it and choose \"Show original\": SPF, DKIM and DMARC should say PASS, and the Received header should show that it arrived over TLS (and over IPv6 if the host has an IPv6 address).\r\n",
        s.fqdn,
        s.port.number(),
        s.from
    );
    let message = MessageBuilder::new()
        .from(s.from.as_str())
        .to(s.to.as_str())
        .subject(format!("mailbake send-test via {}", s.fqdn))
        .message_id(message_id.as_str())
        .date(now as i64)
        .text_body(body)
        .write_to_vec()
        .context("building the test message")?;
    Ok((message, message_id))
}
