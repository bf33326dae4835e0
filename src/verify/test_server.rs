//! Test fixtures for the probes: throw-away certificates, a tiny SMTP server on 127.0.0.1
//! speaking real SMTP and real TLS (tokio-rustls), and a dialer that routes the site's
//! addresses to it. The server's behaviour (greeting name, AUTH before TLS, open relay) is
//! configurable, and it records every command it receives so tests can prove no DATA was sent.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::net::Dialer;

/// A CA and a leaf certificate it issued.
pub struct TestPki {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// A leaf for `names`, valid between the two dates (`(year, month, day)`), issued by a fresh
/// CA (or by itself when `self_signed`).
pub fn pki(
    names: &[&str],
    from: (i32, u8, u8),
    until: (i32, u8, u8),
    self_signed: bool,
) -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mailbake test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("test"));
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let key = KeyPair::generate().expect("leaf key");
    let leaf = if self_signed {
        params.self_signed(&key).expect("self-signed leaf")
    } else {
        params.signed_by(&key, &ca).expect("leaf signed by the CA")
    };
    TestPki {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// How the test server behaves.
#[derive(Clone)]
pub struct Behaviour {
    /// The name in the greeting and the EHLO reply.
    pub name: String,
    /// Offer AUTH before STARTTLS (a misconfiguration to detect).
    pub auth_before_tls: bool,
    /// Accept any recipient (an open relay, to detect).
    pub open_relay: bool,
    /// Offer STARTTLS.
    pub starttls: bool,
}

impl Behaviour {
    pub fn good(name: &str) -> Self {
        Behaviour {
            name: name.to_string(),
            auth_before_tls: false,
            open_relay: false,
            starttls: true,
        }
    }
}

/// Ports 25/587 (STARTTLS) and 465 (implicit TLS) of one fake host, on loopback.
pub struct TestServer {
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    /// Every command line received, in order, per connection.
    pub commands: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    pub async fn start(behaviour: Behaviour, pki: &TestPki) -> TestServer {
        let acceptor = tls_acceptor(pki);
        let commands = Arc::new(Mutex::new(Vec::new()));
        let mut addrs = Vec::new();
        for implicit in [false, false, true] {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            addrs.push(listener.local_addr().expect("local address"));
            let (acceptor, behaviour, commands) =
                (acceptor.clone(), behaviour.clone(), commands.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (acceptor, behaviour, commands) =
                        (acceptor.clone(), behaviour.clone(), commands.clone());
                    tokio::spawn(async move {
                        if implicit {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ =
                                    session(Box::new(tls), true, &behaviour, &commands, None).await;
                            }
                        } else {
                            let _ = session(
                                Box::new(stream),
                                false,
                                &behaviour,
                                &commands,
                                Some(&acceptor),
                            )
                            .await;
                        }
                    });
                }
            });
        }
        TestServer {
            smtp: addrs[0],
            submission: addrs[1],
            submissions: addrs[2],
            commands,
        }
    }

    pub fn received(&self) -> Vec<String> {
        self.commands.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// One SMTP session. Returns after QUIT, EOF, or a STARTTLS handover (which continues the
/// session over TLS in a nested call).
/// Any stream the session runs over: plain TCP, or TLS after STARTTLS (boxed so that a TLS
/// stream can replace a plain one without a recursive type).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn session<'a>(
    stream: Box<dyn Io + 'a>,
    encrypted: bool,
    b: &'a Behaviour,
    commands: &'a Mutex<Vec<String>>,
    acceptor: Option<&'a TlsAcceptor>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let mut stream = BufReader::new(stream);
        if !encrypted || acceptor.is_none() {
            stream
                .write_all(format!("220 {} ESMTP test server\r\n", b.name).as_bytes())
                .await?;
        }
        let mut line = String::new();
        for _ in 0..100 {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_string();
            if let Ok(mut c) = commands.lock() {
                c.push(command.clone());
            }
            let verb = command
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let reply = match verb.as_str() {
                "EHLO" => {
                    let mut lines = vec![b.name.clone()];
                    if b.starttls && !encrypted {
                        lines.push("STARTTLS".into());
                    }
                    if encrypted || b.auth_before_tls {
                        lines.push("AUTH PLAIN".into());
                    }
                    let n = lines.len();
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}\r\n", if i + 1 == n { " " } else { "-" }))
                        .collect::<String>()
                }
                "STARTTLS" if !encrypted => {
                    stream
                        .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                        .await?;
                    let Some(acceptor) = acceptor else {
                        return Ok(());
                    };
                    let tls = acceptor.accept(stream.into_inner()).await?;
                    return session(Box::new(tls), true, b, commands, Some(acceptor)).await;
                }
                "MAIL" => "250 2.1.0 OK\r\n".into(),
                "RCPT" if b.open_relay => "250 2.1.5 OK\r\n".into(),
                "RCPT" => "554 5.7.1 Relay not allowed\r\n".into(),
                "RSET" | "NOOP" => "250 2.0.0 OK\r\n".into(),
                "DATA" => "554 5.5.1 This test server takes no DATA\r\n".into(),
                "QUIT" => {
                    stream.write_all(b"221 2.0.0 Bye\r\n").await?;
                    return Ok(());
                }
                _ => "502 5.5.2 Unknown command\r\n".into(),
            };
            stream.write_all(reply.as_bytes()).await?;
        }
        Ok(())
    })
}

/// Routes `(address, port)` pairs to loopback servers; anything else is refused, so a test
/// can never reach the network.
#[derive(Default)]
pub struct RouteDialer {
    pub routes: BTreeMap<SocketAddr, SocketAddr>,
}

impl Dialer for RouteDialer {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl std::future::Future<Output = io::Result<TcpStream>> + Send {
        let target = self.routes.get(&addr).copied();
        async move {
            match target {
                Some(t) => TcpStream::connect(t).await,
                None => Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("no test server for {addr}"),
                )),
            }
        }
    }
}

/// An HTTPS server on loopback that answers every request with `status` and `body` (the
/// MTA-STS policy host), once per connection, then closes.
pub async fn https_server(pki: &TestPki, status: &'static str, body: String) -> SocketAddr {
    let acceptor = tls_acceptor(pki);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(stream).await else {
                continue;
            };
            let mut tls = BufReader::new(tls);
            let mut line = String::new();
            // The request head ends with an empty line.
            while tls.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let response = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    addr
}

/// A TLS acceptor presenting the test PKI's server certificate, with rustls' safe defaults.
fn tls_acceptor(pki: &TestPki) -> TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(pki.chain.clone(), PrivateKeyDer::Pkcs8(pki.key.clone_key()))
    .expect("server certificate");
    TlsAcceptor::from(Arc::new(config))
}
