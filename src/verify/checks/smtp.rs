//! SMTP: on every address of every host, port 25 greets with the host's fqdn, offers STARTTLS
//! and presents a certificate valid for the fqdn, issued by a trusted CA and not about to
//! expire; AUTH is never offered before TLS; mail for another domain is refused without AUTH
//! (the relay test stops after RCPT: no message is ever sent). 587 (STARTTLS) and 465
//! (implicit TLS) accept TLS with a good certificate and offer AUTH once encrypted.

use std::net::{IpAddr, SocketAddr};

use super::host;
use crate::site::HostName;
use crate::verify::net::{Dialer, endpoint, no_route};
use crate::verify::probe::{self, Relay, Transcript};
use crate::verify::report::CheckBuilder;
use crate::verify::tls::{CertVerdict, Expiry};
use crate::verify::{
    Check, Context, Resolver, SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT, Section, Status,
};

const CERT_FIX: &str = "install a certificate for the host's fqdn from a public CA: with tls.acme in the site file the host gets one from Let's Encrypt by itself (README, \"TLS with ACME\"); a self-signed certificate means ACME has not succeeded yet (on the host: journalctl -u mailbake-acme.service)";
const RENEW_FIX: &str = "renew now: on the host, `sudo systemctl start mailbake-acme.service`, and read `journalctl -u mailbake-acme.service` for why the timer's renewals failed";

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    name: &HostName,
    ip: IpAddr,
    port: u16,
) -> Vec<Check> {
    match port {
        SMTP_PORT => {
            let mut out = relay_port(ctx, name, ip).await;
            out.push(relay(ctx, name, ip).await);
            out
        }
        SUBMISSION_PORT => submission(ctx, name, ip).await,
        SUBMISSIONS_PORT => vec![submissions(ctx, name, ip).await],
        _ => Vec::new(),
    }
}

fn builder(name: &HostName, ip: IpAddr, port: u16, what: &str) -> CheckBuilder {
    Check::of(Section::Smtp, format!("{} {what}", endpoint(ip, port))).host(name)
}

/// A check for an address we could not even connect to.
fn unreachable(name: &HostName, ip: IpAddr, port: u16, error: &std::io::Error) -> Check {
    let b = builder(name, ip, port, "connection")
        .evidence([format!("connect {} -> {error}", endpoint(ip, port))]);
    if no_route(error) {
        b.warn(
            format!("not tested: this machine has no route to {ip} (no IPv6 here?)"),
            "run verify from a machine that has IPv6 (or on the host itself) to test this address",
        )
    } else {
        b.fail(
            format!("cannot connect to port {port}: {error}"),
            format!("check that chasquid runs on the host (`systemctl status chasquid`) and that the provider's firewall lets port {port} in over {}", if ip.is_ipv4() { "IPv4" } else { "IPv6" }),
        )
    }
}

/// The problems of a certificate, worst first.
fn cert_problems(verdict: &CertVerdict) -> Vec<(Status, String, &'static str)> {
    let mut out = Vec::new();
    if let Err(why) = &verdict.name {
        out.push((Status::Fail, format!("the certificate is {why}"), CERT_FIX));
    }
    if let Err(why) = &verdict.chain {
        out.push((Status::Fail, format!("the certificate {why}"), CERT_FIX));
    }
    match &verdict.expiry {
        Expiry::Expired { days_ago } => out.push((
            Status::Fail,
            format!("the certificate expired {days_ago} day(s) ago"),
            RENEW_FIX,
        )),
        Expiry::NotYetValid => out.push((
            Status::Fail,
            "the certificate is not valid yet (is the host's clock right?)".into(),
            CERT_FIX,
        )),
        Expiry::Soon { days_left } => out.push((
            Status::Warn,
            format!("the certificate expires in {days_left} day(s)"),
            RENEW_FIX,
        )),
        Expiry::Unknown(why) => out.push((
            Status::Fail,
            format!("the certificate's dates are unreadable: {why}"),
            CERT_FIX,
        )),
        Expiry::Valid { .. } => {}
    }
    out
}

fn cert_lines(verdict: &CertVerdict) -> Vec<String> {
    verdict
        .summary
        .as_ref()
        .map(|s| s.lines())
        .unwrap_or_default()
}

/// Port 25: greeting, STARTTLS, the certificate, AUTH before TLS.
async fn relay_port<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    name: &HostName,
    ip: IpAddr,
) -> Vec<Check> {
    let h = host(ctx, name);
    let fqdn = h.fqdn.as_str();
    let addr = SocketAddr::new(ip, SMTP_PORT);
    let mut t = Transcript::new();
    let mut client = match probe::dial(&ctx.dialer, addr).await {
        Ok(c) => c,
        Err(e) => return vec![unreachable(name, ip, SMTP_PORT, &e)],
    };
    let me = probe::ehlo_name(client.stream.local_addr().ok());
    let mut out = Vec::new();
    let greeting = probe::greeting(&mut client, &mut t).await;
    let banner = builder(name, ip, SMTP_PORT, "banner");
    match &greeting {
        Err(why) => {
            out.push(banner.evidence(t.0.clone()).fail(
                format!("no SMTP greeting: {why}"),
                "check that chasquid answers on port 25 (`systemctl status chasquid` on the host)",
            ));
            return out;
        }
        Ok(reply) => out.push(banner_verdict(banner.evidence(t.0.clone()), reply, fqdn)),
    }
    let ehlo = match probe::ehlo(&mut client, &me, &mut t).await {
        Ok(e) => e,
        Err(why) => {
            out.push(
                builder(name, ip, SMTP_PORT, "STARTTLS")
                    .evidence(t.0.clone())
                    .fail(
                        format!("EHLO was refused: {why}"),
                        "check chasquid's log on the host (`journalctl -u chasquid`)",
                    ),
            );
            return out;
        }
    };
    out.push(auth_before_tls(name, ip, SMTP_PORT, &ehlo, &t));
    let starttls = builder(name, ip, SMTP_PORT, "STARTTLS");
    if !probe::offers_starttls(&ehlo) {
        probe::quit(client, &mut t).await;
        out.push(starttls.evidence(t.0).fail(
            "STARTTLS is not offered: mail to this host travels in plain text",
            "chasquid offers STARTTLS whenever it has a certificate: check /etc/chasquid/certs/<fqdn>/ on the host",
        ));
        return out;
    }
    // Like 587 and 465: a local TLS setup problem is reported as the STARTTLS failure.
    let tls = match ctx.trust.probing_config() {
        Ok(config) => probe::starttls(client, config, fqdn, &mut t).await,
        Err(why) => Err(why),
    };
    let mut tls = match tls {
        Ok(tls) => tls,
        Err(why) => {
            out.push(
                starttls
                    .evidence(t.0)
                    .fail(format!("STARTTLS failed: {why}"), CERT_FIX),
            );
            return out;
        }
    };
    let verdict = ctx.trust.judge(&probe::peer_chain(&tls), fqdn, ctx.now);
    let _ = probe::ehlo(&mut tls, &me, &mut t).await;
    probe::quit(tls, &mut t).await;
    out.push(
        starttls
            .evidence(t.0.clone())
            .pass("offers STARTTLS, and the handshake completes"),
    );
    out.extend(certificate_checks(ctx, name, ip, &verdict));
    out
}

/// Port 25's greeting: 220, naming the host's fqdn (receivers compare it with the PTR name).
fn banner_verdict(banner: CheckBuilder, reply: &smtp_proto::Response<String>, fqdn: &str) -> Check {
    let greets_as = reply
        .message
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if reply.code == 220 && greets_as == fqdn {
        banner.pass(format!("greets as {fqdn}"))
    } else if reply.code != 220 {
        banner.fail(
            format!(
                "the greeting is {}, not 220: the server refuses mail",
                probe::reply_text(reply)
            ),
            "check chasquid's log on the host (`journalctl -u chasquid`)",
        )
    } else {
        banner.fail(
            format!("greets as `{greets_as}`, not {fqdn}: receivers compare it with the PTR name"),
            format!("the host's hostname must be {fqdn} (the seed sets it; chasquid greets with it): reseed the host, or `hostnamectl set-hostname {fqdn}` and restart chasquid"),
        )
    }
}

/// Port 25's certificate, one check per property: name, chain, expiry.
fn certificate_checks<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    name: &HostName,
    ip: IpAddr,
    verdict: &CertVerdict,
) -> Vec<Check> {
    let fqdn = host(ctx, name).fqdn.as_str();
    let mut out = Vec::new();
    let lines = cert_lines(verdict);
    let cert = |what: &str| builder(name, ip, SMTP_PORT, what).evidence(lines.clone());
    out.push(match &verdict.name {
        Ok(()) => cert("certificate name").pass(format!("the certificate is valid for {fqdn}")),
        Err(why) => cert("certificate name").fail(format!("the certificate is {why}"), CERT_FIX),
    });
    out.push(match &verdict.chain {
        Ok(()) => cert("certificate chain").pass(format!("issued by a CA in {}", ctx.trust.source)),
        Err(why) => cert("certificate chain").fail(format!("the certificate {why}"), CERT_FIX),
    });
    let expiry = cert("certificate expiry");
    out.push(match &verdict.expiry {
        Expiry::Valid { days_left } => expiry.pass(format!("valid for {days_left} more day(s)")),
        Expiry::Soon { days_left } => expiry.warn(
            format!("the certificate expires in {days_left} day(s): renewal is failing"),
            RENEW_FIX,
        ),
        Expiry::Expired { days_ago } => expiry.fail(
            format!("the certificate expired {days_ago} day(s) ago: senders that check refuse it"),
            RENEW_FIX,
        ),
        Expiry::NotYetValid => expiry.fail(
            "the certificate is not valid yet (is the host's clock right?)",
            CERT_FIX,
        ),
        Expiry::Unknown(why) => expiry.fail(
            format!("the certificate's dates are unreadable: {why}"),
            CERT_FIX,
        ),
    });
    out
}

fn auth_before_tls(
    name: &HostName,
    ip: IpAddr,
    port: u16,
    ehlo: &smtp_proto::EhloResponse<String>,
    t: &Transcript,
) -> Check {
    let b = builder(name, ip, port, "AUTH before TLS").evidence(t.0.clone());
    if probe::offers_auth(ehlo) {
        b.fail(
            "AUTH is offered before TLS: a client could send its password in plain text",
            "chasquid only offers AUTH over TLS; check that this port is served by chasquid",
        )
    } else {
        b.pass("AUTH is not offered before TLS")
    }
}

/// The open-relay test on its own plain-text connection.
async fn relay<R: Resolver, D: Dialer>(ctx: &Context<R, D>, name: &HostName, ip: IpAddr) -> Check {
    let addr = SocketAddr::new(ip, SMTP_PORT);
    let b = builder(name, ip, SMTP_PORT, "open relay");
    let mut t = Transcript::new();
    let mut client = match probe::dial(&ctx.dialer, addr).await {
        Ok(c) => c,
        Err(e) => {
            return b.evidence([format!("connect {addr} -> {e}")]).warn(
                "not tested: cannot connect",
                "see the connection check above",
            );
        }
    };
    let me = probe::ehlo_name(client.stream.local_addr().ok());
    if let Err(why) = probe::greeting(&mut client, &mut t).await {
        return b
            .evidence(t.0)
            .warn(format!("not tested: {why}"), "see the banner check above");
    }
    if let Err(why) = probe::ehlo(&mut client, &me, &mut t).await {
        return b
            .evidence(t.0)
            .warn(format!("not tested: {why}"), "see the STARTTLS check above");
    }
    match probe::relay_test(client, &mut t).await {
        Relay::Refused(r) => b.evidence(t.0).pass(format!(
            "mail for another domain is refused without AUTH ({}); no message was sent",
            probe::reply_text(&r)
        )),
        Relay::Accepted(r) => b.evidence(t.0).fail(
            format!("OPEN RELAY: mail for another domain is accepted without AUTH ({})", probe::reply_text(&r)),
            "chasquid relays only for authenticated users: check that port 25 is chasquid, and take the host off the internet until it is fixed",
        ),
        Relay::SenderRefused(r) => b.evidence(t.0).warn(
            format!("not tested: MAIL FROM was refused ({})", probe::reply_text(&r)),
            "run again; if it persists, read chasquid's log on the host",
        ),
        Relay::Error(why) => b.evidence(t.0).warn(format!("not tested: {why}"), "run again"),
    }
}

/// Port 587: no AUTH before TLS; STARTTLS with a good certificate; AUTH after.
async fn submission<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    name: &HostName,
    ip: IpAddr,
) -> Vec<Check> {
    let fqdn = host(ctx, name).fqdn.as_str();
    let addr = SocketAddr::new(ip, SUBMISSION_PORT);
    let mut t = Transcript::new();
    let mut client = match probe::dial(&ctx.dialer, addr).await {
        Ok(c) => c,
        Err(e) => return vec![unreachable(name, ip, SUBMISSION_PORT, &e)],
    };
    let me = probe::ehlo_name(client.stream.local_addr().ok());
    let b = builder(name, ip, SUBMISSION_PORT, "STARTTLS");
    if let Err(why) = probe::greeting(&mut client, &mut t).await {
        return vec![b.evidence(t.0).fail(
            format!("no SMTP greeting: {why}"),
            "check that chasquid listens on 587 (`systemctl status chasquid-submission.socket`)",
        )];
    }
    let ehlo = match probe::ehlo(&mut client, &me, &mut t).await {
        Ok(e) => e,
        Err(why) => {
            return vec![b.evidence(t.0).fail(
                format!("EHLO was refused: {why}"),
                "check chasquid's log on the host",
            )];
        }
    };
    let mut out = vec![auth_before_tls(name, ip, SUBMISSION_PORT, &ehlo, &t)];
    if !probe::offers_starttls(&ehlo) {
        out.push(b.evidence(t.0).fail("STARTTLS is not offered: clients cannot log in safely", "chasquid offers STARTTLS whenever it has a certificate: check /etc/chasquid/certs/<fqdn>/"));
        return out;
    }
    let tls = match ctx.trust.probing_config() {
        Ok(config) => probe::starttls(client, config, fqdn, &mut t).await,
        Err(why) => Err(why),
    };
    out.push(match tls {
        Ok(tls) => {
            let verdict = ctx.trust.judge(&probe::peer_chain(&tls), fqdn, ctx.now);
            encrypted_verdict(b, tls, &me, t, &verdict, "STARTTLS").await
        }
        Err(why) => b
            .evidence(t.0)
            .fail(format!("STARTTLS failed: {why}"), CERT_FIX),
    });
    out
}

/// Port 465: TLS from the first byte with a good certificate, then AUTH.
async fn submissions<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    name: &HostName,
    ip: IpAddr,
) -> Check {
    let fqdn = host(ctx, name).fqdn.as_str();
    let addr = SocketAddr::new(ip, SUBMISSIONS_PORT);
    let mut t = Transcript::new();
    let b = builder(name, ip, SUBMISSIONS_PORT, "TLS");
    let client = match probe::dial(&ctx.dialer, addr).await {
        Ok(c) => c,
        Err(e) => return unreachable(name, ip, SUBMISSIONS_PORT, &e),
    };
    let me = probe::ehlo_name(client.stream.local_addr().ok());
    let tls = match ctx.trust.probing_config() {
        Ok(config) => probe::implicit_tls(client, config, fqdn, &mut t).await,
        Err(why) => Err(why),
    };
    let mut tls = match tls {
        Ok(tls) => tls,
        Err(why) => {
            return b
                .evidence(t.0)
                .fail(format!("the TLS handshake failed: {why}"), CERT_FIX);
        }
    };
    let verdict = ctx.trust.judge(&probe::peer_chain(&tls), fqdn, ctx.now);
    if let Err(why) = probe::greeting(&mut tls, &mut t).await {
        return b.evidence(t.0).fail(
            format!("no SMTP greeting over TLS: {why}"),
            "check chasquid's log on the host",
        );
    }
    encrypted_verdict(b, tls, &me, t, &verdict, "TLS").await
}

/// Ends an encrypted submission session (EHLO, QUIT) and makes its one check: the worst of
/// the certificate's problems and whether AUTH is offered.
async fn encrypted_verdict(
    b: CheckBuilder,
    mut tls: mail_send::SmtpClient<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    me: &str,
    mut t: Transcript,
    verdict: &CertVerdict,
    how: &str,
) -> Check {
    let auth = probe::ehlo(&mut tls, me, &mut t)
        .await
        .as_ref()
        .is_ok_and(probe::offers_auth);
    probe::quit(tls, &mut t).await;
    let mut problems = cert_problems(verdict);
    if !auth {
        problems.push((
            Status::Fail,
            "AUTH is not offered after TLS: clients cannot log in".into(),
            "check that chasquid serves this port (its submission ports offer AUTH over TLS)",
        ));
    }
    let mut evidence = t.0.clone();
    evidence.extend(cert_lines(verdict));
    let b = b.evidence(evidence);
    match problems.iter().map(|(s, _, _)| *s).max() {
        None => b.pass(format!(
            "accepts {how}; valid certificate; AUTH offered once encrypted"
        )),
        Some(worst) => {
            let summary = problems
                .iter()
                .map(|(_, w, _)| w.clone())
                .collect::<Vec<_>>()
                .join("; ");
            let fix = problems.first().map(|(_, _, f)| f.to_string());
            b.verdict(worst, summary, fix)
        }
    }
}
