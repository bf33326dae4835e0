//! SMTP conversations through mail-send's low-level client, each step bounded in time and
//! written to a transcript (server replies as `S:`, our commands as `C:`). Every command we
//! send is a constant or built from validated names; nothing here sends DATA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_send::SmtpClient;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use smtp_proto::{EXT_START_TLS, EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::net::Dialer;

/// Per-command bound (mox: 10 s).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The envelope of the open-relay test: `.invalid` (RFC 2606) can never be delivered to, so
/// even a server that accepts the recipient could not relay the message anywhere; and we stop
/// after RCPT anyway.
pub const RELAY_SENDER: &str = "mailbake-verify@relay-test.invalid";
pub const RELAY_RECIPIENT: &str = "relay-test@relay-test.invalid";

pub struct Transcript(pub Vec<String>);

impl Transcript {
    pub fn new() -> Self {
        Transcript(Vec::new())
    }

    pub fn server(&mut self, reply: &Response<String>) {
        let text = reply_text(reply);
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        self.0.push(format!("S: {first}"));
        let rest: Vec<&str> = lines.collect();
        if !rest.is_empty() {
            self.0.push(format!("S:     {}", rest.join(" | ")));
        }
    }

    pub fn client(&mut self, line: &str) {
        self.0.push(format!("C: {line}"));
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }
}

/// A reply as the server sent it: `250 2.0.0 text` (smtp-proto keeps the enhanced status
/// code apart from the text).
pub fn reply_text(reply: &Response<String>) -> String {
    match reply.esc {
        [0, 0, 0] => format!("{} {}", reply.code, reply.message),
        [a, b, c] => format!("{} {a}.{b}.{c} {}", reply.code, reply.message),
    }
}

fn smtp_error(e: &mail_send::Error) -> String {
    match e {
        mail_send::Error::UnexpectedReply(r) => format!("the server answered {}", reply_text(r)),
        mail_send::Error::Timeout => format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()),
        mail_send::Error::Tls(e) => format!("TLS handshake failed: {e}"),
        other => other.to_string(),
    }
}

/// Connects and wraps the stream in an SMTP client.
pub async fn dial(
    dialer: &impl Dialer,
    addr: SocketAddr,
) -> std::io::Result<SmtpClient<TcpStream>> {
    let stream = dialer.connect(addr).await?;
    Ok(SmtpClient {
        stream,
        timeout: COMMAND_TIMEOUT,
    })
}

/// The name we introduce ourselves with: our address as a literal (RFC 5321 §4.1.3), since a
/// laptop has no name of its own that the server could check.
pub fn ehlo_name(local: Option<SocketAddr>) -> String {
    match local {
        Some(SocketAddr::V4(a)) => format!("[{}]", a.ip()),
        Some(SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
        None => "[127.0.0.1]".into(),
    }
}

/// Reads the greeting.
pub async fn greeting<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<S>,
    t: &mut Transcript,
) -> Result<Response<String>, String> {
    let reply = tokio::time::timeout(COMMAND_TIMEOUT, client.read())
        .await
        .map_err(|_| format!("no greeting within {} s", COMMAND_TIMEOUT.as_secs()))?
        .map_err(|e| smtp_error(&e))?;
    t.server(&reply);
    Ok(reply)
}

pub async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<S>,
    name: &str,
    t: &mut Transcript,
) -> Result<EhloResponse<String>, String> {
    t.client(&format!("EHLO {name}"));
    let reply = client.ehlo(name).await.map_err(|e| {
        let why = smtp_error(&e);
        t.note(format!("S: {why}"));
        why
    })?;
    t.note(format!(
        "S: 250 {} ({})",
        reply.hostname,
        capabilities(&reply)
    ));
    Ok(reply)
}

/// `STARTTLS, AUTH PLAIN LOGIN, ...` for the transcript.
pub fn capabilities(ehlo: &EhloResponse<String>) -> String {
    let mut caps = Vec::new();
    if ehlo.has_capability(EXT_START_TLS) {
        caps.push("STARTTLS".to_string());
    }
    if offers_auth(ehlo) {
        let mut mechs = Vec::new();
        if ehlo.auth_mechanisms & smtp_proto::AUTH_PLAIN != 0 {
            mechs.push("PLAIN");
        }
        if ehlo.auth_mechanisms & smtp_proto::AUTH_LOGIN != 0 {
            mechs.push("LOGIN");
        }
        caps.push(format!("AUTH {}", mechs.join(" ")).trim_end().to_string());
    }
    if caps.is_empty() {
        "no STARTTLS, no AUTH".into()
    } else {
        caps.join(", ")
    }
}

pub fn offers_auth(ehlo: &EhloResponse<String>) -> bool {
    ehlo.auth_mechanisms != 0 || ehlo.has_capability(smtp_proto::EXT_AUTH)
}

pub fn offers_starttls(ehlo: &EhloResponse<String>) -> bool {
    ehlo.has_capability(EXT_START_TLS)
}

/// `STARTTLS` and the handshake, with SNI `server_name`.
pub async fn starttls(
    mut client: SmtpClient<TcpStream>,
    config: Arc<ClientConfig>,
    server_name: &str,
    t: &mut Transcript,
) -> Result<SmtpClient<TlsStream<TcpStream>>, String> {
    t.client("STARTTLS");
    let reply = client
        .cmd(b"STARTTLS\r\n")
        .await
        .map_err(|e| smtp_error(&e))?;
    t.server(&reply);
    if reply.code != 220 {
        return Err(format!("STARTTLS refused: {}", reply_text(&reply)));
    }
    implicit_tls(client, config, server_name, t).await
}

/// The TLS handshake on a connection: at once (port 465) or after `STARTTLS`.
pub async fn implicit_tls(
    client: SmtpClient<TcpStream>,
    config: Arc<ClientConfig>,
    server_name: &str,
    t: &mut Transcript,
) -> Result<SmtpClient<TlsStream<TcpStream>>, String> {
    let tls = client
        .into_tls(&TlsConnector::from(config), server_name)
        .await
        .map_err(|e| smtp_error(&e))?;
    t.note(format!("TLS: {}", describe_tls(tls.tls_connection())));
    Ok(tls)
}

fn describe_tls(conn: &rustls::ClientConnection) -> String {
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "?".into());
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "?".into());
    format!("{version}, {suite}")
}

/// The chain the server presented, leaf first.
pub fn peer_chain(client: &SmtpClient<TlsStream<TcpStream>>) -> Vec<CertificateDer<'static>> {
    client
        .tls_connection()
        .peer_certificates()
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// How the open-relay test came out.
pub enum Relay {
    /// The recipient was refused, as it must be.
    Refused(Response<String>),
    /// The recipient was accepted without AUTH: an open relay.
    Accepted(Response<String>),
    /// MAIL FROM was refused, so RCPT could not be tried.
    SenderRefused(Response<String>),
    Error(String),
}

/// MAIL FROM and RCPT TO for an outside domain without AUTH, then RSET and QUIT: never DATA.
pub async fn relay_test<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: SmtpClient<S>,
    t: &mut Transcript,
) -> Relay {
    let mut run = async || -> Result<Relay, mail_send::Error> {
        t.client(&format!("MAIL FROM:<{RELAY_SENDER}>"));
        let reply = client
            .cmd(format!("MAIL FROM:<{RELAY_SENDER}>\r\n"))
            .await?;
        t.server(&reply);
        if !reply.is_positive_completion() {
            return Ok(Relay::SenderRefused(reply));
        }
        t.client(&format!("RCPT TO:<{RELAY_RECIPIENT}>"));
        let reply = client
            .cmd(format!("RCPT TO:<{RELAY_RECIPIENT}>\r\n"))
            .await?;
        t.server(&reply);
        let verdict = if reply.is_positive_completion() {
            Relay::Accepted(reply)
        } else {
            Relay::Refused(reply)
        };
        t.client("RSET");
        if let Ok(r) = client.cmd(b"RSET\r\n").await {
            t.server(&r);
        }
        Ok(verdict)
    };
    let verdict = run().await.unwrap_or_else(|e| Relay::Error(smtp_error(&e)));
    quit(client, t).await;
    verdict
}

/// QUIT, ignoring the answer: the conversation is over either way.
pub async fn quit<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: SmtpClient<S>,
    t: &mut Transcript,
) {
    t.client("QUIT");
    if let Ok(r) = client.cmd(b"QUIT\r\n").await {
        t.server(&r);
    }
}
