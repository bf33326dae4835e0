//! The MTA-STS policy fetch (RFC 8461 §3.3): `GET /.well-known/mta-sts.txt` from
//! `mta-sts.<domain>` over HTTPS with a certificate valid for that name, no redirects, at most
//! 64 KiB. The address comes from our resolver and the connection from our dialer, like every
//! other probe.

use std::net::{IpAddr, SocketAddr};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;

use super::dns::{Record, RecordType, Resolver};
use super::net::Dialer;
use super::tls::CertVerdict;
use super::{Context, HTTPS_PORT};

/// RFC 8461 §3.3: senders may refuse policies larger than 64 KiB.
const MAX_POLICY: usize = 64 * 1024;
/// Room for the response head on top of the body.
const MAX_RESPONSE: usize = MAX_POLICY + 8 * 1024;

pub struct Fetched {
    pub body: String,
    pub content_type: Option<String>,
    pub verdict: CertVerdict,
}

/// Fetches the policy of `domain`; `Err` says why there is none. Evidence goes to `evidence`.
pub async fn fetch_policy<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &str,
    evidence: &mut Vec<String>,
) -> Result<Fetched, String> {
    let host = format!("mta-sts.{domain}");
    let mut addresses = Vec::new();
    for rtype in [RecordType::A, RecordType::Aaaa] {
        let answer = ctx.resolver.lookup(&host, rtype).await;
        evidence.push(super::dns::show(&host, rtype, &answer));
        for r in answer.unwrap_or_default() {
            match r {
                Record::A(ip) => addresses.push(IpAddr::V4(ip)),
                Record::Aaaa(ip) => addresses.push(IpAddr::V6(ip)),
                _ => {}
            }
        }
    }
    if addresses.is_empty() {
        return Err(format!("{host} has no address"));
    }
    let mut last = String::new();
    for ip in addresses {
        let addr = SocketAddr::new(ip, HTTPS_PORT);
        match get(ctx, &host, addr).await {
            Ok(fetched) => {
                evidence.push(format!(
                    "GET https://{host}/.well-known/mta-sts.txt from {addr} -> 200"
                ));
                return Ok(fetched);
            }
            Err(why) => {
                evidence.push(format!(
                    "GET https://{host}/.well-known/mta-sts.txt from {addr} -> {why}"
                ));
                last = why;
            }
        }
    }
    Err(last)
}

async fn get<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    host: &str,
    addr: SocketAddr,
) -> Result<Fetched, String> {
    let tcp = ctx.dialer.connect(addr).await.map_err(|e| e.to_string())?;
    let config = ctx.trust.probing_config()?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let chain: Vec<_> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let verdict = ctx.trust.judge(&chain, host, ctx.now);
    // HTTP/1.0 with `Connection: close`: the body is everything up to EOF, never chunked.
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mailbake-verify\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    (&mut tls)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    if response.len() > MAX_RESPONSE {
        return Err(format!(
            "the response is larger than {} KiB",
            MAX_POLICY / 1024
        ));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut headers);
    let body_at = match head.parse(&response) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the response ended inside its header".into()),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    match head.code {
        Some(200) => {}
        Some(code) => {
            return Err(format!(
                "HTTP {code} {} (redirects are not followed, RFC 8461 §3.3)",
                head.reason.unwrap_or("")
            ));
        }
        None => return Err("no HTTP status".into()),
    }
    let content_type = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    let body = String::from_utf8(response[body_at..].to_vec())
        .map_err(|_| "the policy is not UTF-8 text".to_string())?;
    Ok(Fetched {
        body,
        content_type,
        verdict,
    })
}
