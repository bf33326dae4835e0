#!/usr/bin/python3
"""Client probes of a mail server, as a user (or a remote MTA) would see it.

Run with Debian's /usr/bin/python3 (it has python3-dkim); otherwise only the standard library.
Each subcommand prints ONE JSON object on stdout. Exit status 0 means the probe got an answer
from the server (whatever it was: a refusal is an answer, the caller asserts on it); non-zero
means the probe itself failed (connection refused, TLS handshake failed, bad usage), with the
reason on stderr. Certificates are never verified here: `cert` shows what is served so the test
can check it separately.

Common options: --timeout SECONDS (default 30), --helo NAME (default probe.mailbake.test; given
explicitly so smtplib does not resolve the host's own name).

  banner HOST PORT [--source ADDR]
      The greeting (--source: connect from this local address).  {"code": 220, "banner": "mx ESMTP ...", "line": "220 mx ESMTP ..."}

  ehlo HOST PORT [--mode plain|starttls|tls]
      EHLO extensions, after STARTTLS / on implicit TLS with --mode.
      {"code": 250, "greeting": "mx hello probe", "extensions": {"PIPELINING": "",
       "SIZE": "10485760", "AUTH": "PLAIN"}, "lines": ["mx hello probe", "PIPELINING", ...]}

  auth-before-tls HOST PORT USER PASS
      AUTH PLAIN (initial response) on the plaintext connection, with or without AUTH advertised.
      {"advertised": false, "code": 503, "message": "5.7.10 ...", "refused": true}

  submit HOST PORT --mode plain|starttls|tls [--user U --password P] --from A --to B [--to C]
         [--subject S] [--body-file F | --message-file F] [--source ADDR]
         [--dkim-key PEM --dkim-selector S [--tamper] [--forged-header H]]
      Sends one message (AUTH PLAIN/LOGIN when --user is given). --body-file: the body of a
      generated message; --message-file: a complete message sent byte for byte. --source:
      connect from this local address. --dkim-key: sign the message with dkimpy for the
      domain of --from (relaxed/relaxed, rsa-sha256) first; --tamper: then change its body,
      so the signature must fail; --forged-header "NAME: VALUE" (repeatable): then put this
      header line on top, outside the signature.
      {"accepted": true, "stage": "data", "code": 250, "message": "2.0.0 queued",
       "message_id": "<...@example.test>"}
      On refusal: accepted false and stage one of connect|starttls|auth|mail|rcpt|data.

  burst HOST PORT --mode starttls|tls --user U --password P --from A --to B --count N --tag T
        [--max-attempts M]
      Submits N uniquely named messages (Subject "T <k>", Message-ID <T.<k>@<domain of A>>,
      k = 1, 2, ...) over one authenticated session, opening a new one when the server drops
      the connection (a restart; a session that does not open yet is tried again 2 s later),
      until N were accepted or M messages were tried (default N + 10, at most 5 sessions). Unlike the other subcommands it prints one JSON line per
      message, flushed as soon as the server answered its DATA, so the caller can act at that
      exact moment (cut the power):
      {"k": 3, "subject": "T 3", "message_id": "<T.3@example.com>", "accepted": true,
       "code": 250, "session": 1}
      A message whose answer never came (the connection broke) has accepted false, code null
      and the error: the server may or may not have queued it. Exit status 0 when N were
      accepted.

  relay HOST PORT --from A --to B
      Unauthenticated MAIL FROM + RCPT TO on plaintext (an open-relay check): the RCPT reply.
      {"stage": "rcpt", "code": 550, "message": "5.7.1 ...", "refused": true}

  cert HOST PORT --mode starttls|tls
      The served leaf certificate.
      {"subject": "CN=mx.example.test", "issuer": "CN=...", "sans": ["DNS:mx.example.test"],
       "serial": "1A2B...", "sha256": "AB:CD:...", "not_before": "...", "not_after": "...",
       "tls_version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "pem": "-----BEGIN ..."}

  dkim-verify --records FILE < message
      Verifies every DKIM-Signature of the message on stdin with dkimpy, answering TXT lookups
      only from FILE: a JSON array of {"name", "type", "value"} (names absolute, no trailing
      dot; a TXT value either plain or as quoted strings `"a" "b"`, which are joined).
      {"signatures": [{"domain": "example.test", "selector": "s1", "algorithm": "rsa-sha256",
                        "ok": true, "log": []}]}
      Exit status 1 when there is no signature or any signature fails.
"""

import argparse
import base64
import email.policy
import email.utils
import json
import logging
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from email.message import EmailMessage


class ProbeError(Exception):
    pass


def out(obj):
    print(json.dumps(obj, sort_keys=True))


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


def tls_context():
    # Verification off on purpose: the probe shows what is served; the test judges it.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(args, mode):
    """An SMTP session after EHLO (and STARTTLS + EHLO again for starttls)."""
    source = (args.source, 0) if getattr(args, "source", None) else None
    try:
        if mode == "tls":
            s = smtplib.SMTP_SSL(local_hostname=args.helo, timeout=args.timeout,
                                 context=tls_context(), source_address=source)
        else:
            s = smtplib.SMTP(local_hostname=args.helo, timeout=args.timeout,
                             source_address=source)
        # smtplib takes the TLS server name (SNI) from _host, which only its constructor sets;
        # connecting explicitly (to read the greeting ourselves) must set it too.
        s._host = args.host
        code, msg = s.connect(args.host, args.port)
    except (OSError, smtplib.SMTPException) as e:
        raise ProbeError(f"cannot connect to {args.host}:{args.port} ({mode}): {e}")
    if code != 220:
        s.close()
        raise ProbeError(f"{args.host}:{args.port} greeted with {code} {text(msg)}")
    s.probe_ehlo_code = s.ehlo()[0]
    if mode == "starttls":
        if not s.has_extn("starttls"):
            raise ProbeError(f"{args.host}:{args.port} does not offer STARTTLS: {text(s.ehlo_resp)}")
        try:
            s.starttls(context=tls_context())
        except (OSError, smtplib.SMTPException) as e:
            raise ProbeError(f"STARTTLS with {args.host}:{args.port} failed: {e}")
        s.probe_ehlo_code = s.ehlo()[0]
    return s


def quit_quietly(s):
    try:
        s.quit()
    except (OSError, smtplib.SMTPException):
        s.close()


def cmd_banner(args):
    source = (args.source, 0) if args.source else None
    s = smtplib.SMTP(local_hostname=args.helo, timeout=args.timeout, source_address=source)
    try:
        code, msg = s.connect(args.host, args.port)
    except OSError as e:
        raise ProbeError(f"cannot connect to {args.host}:{args.port}: {e}")
    banner = text(msg)
    quit_quietly(s)
    out({"code": code, "banner": banner, "line": f"{code} {banner.splitlines()[0] if banner else ''}"})


def cmd_ehlo(args):
    s = connect(args, args.mode)
    lines = text(s.ehlo_resp or b"").splitlines()
    extensions = {}
    for line in lines[1:]:
        kw, _, params = line.partition(" ")
        extensions[kw.upper()] = params
    out({"code": s.probe_ehlo_code, "greeting": lines[0] if lines else "",
         "extensions": extensions, "lines": lines, "mode": args.mode})
    quit_quietly(s)


def cmd_auth_before_tls(args):
    s = connect(args, "plain")
    advertised = s.has_extn("auth")
    creds = base64.b64encode(f"\0{args.user}\0{args.password}".encode()).decode()
    code, msg = s.docmd("AUTH", "PLAIN " + creds)
    quit_quietly(s)
    out({"advertised": advertised, "code": code, "message": text(msg), "refused": code >= 400})


def build_message(args):
    if args.message_file:
        with open(args.message_file, "rb") as f:
            return f.read(), None
    m = EmailMessage()
    m["From"] = args.sender
    m["To"] = ", ".join(args.to)
    m["Subject"] = args.subject
    m["Date"] = email.utils.formatdate(localtime=False)
    domain = args.sender.rpartition("@")[2] or "probe.mailbake.test"
    m["Message-ID"] = email.utils.make_msgid(domain=domain)
    body = "Sent by qemu-tests/probe.py.\n"
    if args.body_file:
        with open(args.body_file, encoding="utf-8") as f:
            body = f.read()
    m.set_content(body)
    return m.as_bytes(policy=email.policy.SMTP), m["Message-ID"]


def dkim_sign(args, data):
    import dkim  # python3-dkim

    with open(args.dkim_key, "rb") as f:
        key = f.read()
    domain = args.sender.rpartition("@")[2]
    headers = [b"from", b"to", b"subject", b"date", b"message-id"]
    sig = dkim.sign(data, args.dkim_selector.encode(), domain.encode(), key,
                    canonicalize=(b"relaxed", b"relaxed"), include_headers=headers)
    data = sig + data
    if args.forged_header:
        # Above the signature, as a forger would put it: an Authentication-Results of its
        # own that a reader picking headers by position would take for the receiver's.
        data = b"".join(h.encode() + b"\r\n" for h in args.forged_header) + data
    if args.tamper:
        data = data.replace(b"Sent by qemu-tests/probe.py.", b"Sent by someone else.")
    return data


def cmd_submit(args):
    data, message_id = build_message(args)
    if args.dkim_key:
        data = dkim_sign(args, data)
    result = {"accepted": False, "message_id": message_id}
    s = connect(args, args.mode)
    try:
        if args.user is not None:
            result["stage"] = "auth"
            s.login(args.user, args.password or "")
        result["stage"] = "mail"
        code, msg = s.mail(args.sender)
        if code != 250:
            raise smtplib.SMTPResponseException(code, msg)
        result["stage"] = "rcpt"
        for rcpt in args.to:
            code, msg = s.rcpt(rcpt)
            if code not in (250, 251):
                raise smtplib.SMTPResponseException(code, msg)
        result["stage"] = "data"
        code, msg = s.data(data)
        result.update(accepted=True, code=code, message=text(msg))
    except smtplib.SMTPNotSupportedError as e:
        result.update(code=None, message=f"not supported by the server: {e}")
    except smtplib.SMTPResponseException as e:
        result.update(code=e.smtp_code, message=text(e.smtp_error))
    except smtplib.SMTPException as e:
        # e.g. "No suitable authentication method found" (AUTH not advertised).
        result.update(code=None, message=str(e))
    quit_quietly(s)
    out(result)


def burst_message(args, k):
    domain = args.sender.rpartition("@")[2]
    m = EmailMessage()
    m["From"] = args.sender
    m["To"] = args.to
    m["Subject"] = f"{args.tag} {k}"
    m["Date"] = email.utils.formatdate(localtime=False)
    m["Message-ID"] = f"<{args.tag}.{k}@{domain}>"
    m.set_content(f"Message {k} of burst {args.tag}, sent by qemu-tests/probe.py.\n")
    return m.as_bytes(policy=email.policy.SMTP), m["Subject"], m["Message-ID"]


def burst_session(args):
    s = connect(args, args.mode)
    s.login(args.user, args.password)
    return s


def cmd_burst(args):
    max_attempts = args.max_attempts or args.count + 10
    accepted, session, s, k = 0, 0, None, 0
    while accepted < args.count and k < max_attempts:
        if s is None:
            session += 1
            if session > 5:
                raise ProbeError(f"gave up after 5 sessions with {accepted} accepted")
            try:
                s = burst_session(args)
            except (ProbeError, OSError, smtplib.SMTPException) as e:
                # The server is still coming back (a restart): try again shortly, bounded
                # by the session count.
                print(f"burst: session {session} did not open: {e}", file=sys.stderr)
                time.sleep(2)
                continue
        k += 1
        data, subject, message_id = burst_message(args, k)
        line = {"k": k, "subject": subject, "message_id": message_id, "session": session}
        try:
            s.sendmail(args.sender, [args.to], data)
            accepted += 1
            line.update(accepted=True, code=250)
        except smtplib.SMTPResponseException as e:
            # An answer, but not 250 (a 4xx while the server restarts): not accepted.
            line.update(accepted=False, code=e.smtp_code, error=text(e.smtp_error))
        except smtplib.SMTPRecipientsRefused as e:
            line.update(accepted=False, code=None, error=str(e))
        except (OSError, smtplib.SMTPException) as e:
            # No answer: the connection broke. Start a new session for the next message.
            line.update(accepted=False, code=None, error=f"{type(e).__name__}: {e}")
            s.close()
            s = None
        print(json.dumps(line, sort_keys=True), flush=True)
    if s is not None:
        quit_quietly(s)
    if accepted < args.count:
        raise ProbeError(f"only {accepted} of {args.count} accepted in {k} tries")


def cmd_relay(args):
    s = connect(args, "plain")
    code, msg = s.mail(args.sender)
    stage = "mail"
    if code == 250:
        stage = "rcpt"
        code, msg = s.rcpt(args.to)
    s.rset()
    quit_quietly(s)
    out({"stage": stage, "code": code, "message": text(msg), "refused": code >= 400})


def x509_fields(der):
    try:
        p = subprocess.run(
            ["openssl", "x509", "-inform", "DER", "-noout", "-nameopt", "RFC2253",
             "-subject", "-issuer", "-serial", "-fingerprint", "-sha256",
             "-startdate", "-enddate", "-ext", "subjectAltName"],
            input=der, capture_output=True, check=False)
    except OSError as e:
        raise ProbeError(f"cannot run openssl: {e}")
    if p.returncode != 0:
        raise ProbeError(f"openssl x509 could not read the served certificate: {text(p.stderr)}")
    fields = {"sans": []}
    lines = text(p.stdout).splitlines()
    keys = {"subject": "subject", "issuer": "issuer", "serial": "serial",
            "sha256 fingerprint": "sha256", "notbefore": "not_before", "notafter": "not_after"}
    for i, line in enumerate(lines):
        k, sep, v = line.partition("=")
        if sep and k.strip().lower() in keys:
            fields[keys[k.strip().lower()]] = v.strip()
        elif line.startswith("X509v3 Subject Alternative Name"):
            for nxt in lines[i + 1:]:
                if not nxt.startswith(" "):
                    break
                fields["sans"] += [x.strip() for x in nxt.split(",") if x.strip()]
    return fields


def cmd_cert(args):
    s = connect(args, args.mode)
    der = s.sock.getpeercert(binary_form=True)
    version, cipher = s.sock.version(), s.sock.cipher()[0]
    quit_quietly(s)
    if not der:
        raise ProbeError("the server sent no certificate")
    fields = x509_fields(der)
    fields.update(tls_version=version, cipher=cipher, pem=ssl.DER_cert_to_PEM_cert(der))
    out(fields)


def txt_value(v):
    """`"a" "b"` -> `ab` (zone-file form); anything else as is."""
    v = v.strip()
    if not v.startswith('"'):
        return v
    parts, cur, inq, esc = [], [], False, False
    for ch in v:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\" and inq:
            esc = True
        elif ch == '"':
            if inq:
                parts.append("".join(cur))
                cur = []
            inq = not inq
        elif inq:
            cur.append(ch)
    return "".join(parts)


def cmd_dkim_verify(args):
    import dkim  # python3-dkim; imported here so the SMTP probes work without it
    from dkim.util import parse_tag_value

    try:
        with open(args.records, encoding="utf-8") as f:
            records = json.load(f)
        txt = {}
        for r in records:
            if str(r["type"]).upper() == "TXT":
                txt.setdefault(str(r["name"]).rstrip(".").lower(), []).append(txt_value(str(r["value"])))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ProbeError(f"cannot read DNS records from {args.records}: {e}")

    def lookup(name, timeout=5):
        values = txt.get(text(name).rstrip(".").lower(), [])
        dkim_values = [v for v in values if v.startswith("v=DKIM1")] or values
        return dkim_values[0].encode() if dkim_values else None

    message = sys.stdin.buffer.read()
    headers = dkim.DKIM(message).headers
    sigs = [v for (k, v) in headers if k.lower() == b"dkim-signature"]
    results = []
    for idx, value in enumerate(sigs):
        try:
            tags = parse_tag_value(b"".join(value.split()))
        except Exception as e:  # a malformed signature is a failing one
            tags = {}
        log = []

        class Collect(logging.Handler):
            def emit(self, record):
                log.append(record.getMessage())

        logger = logging.getLogger(f"probe-dkim-{idx}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(Collect())
        try:
            ok = bool(dkim.DKIM(message, logger=logger).verify(idx=idx, dnsfunc=lookup))
        except dkim.DKIMException as e:
            ok = False
            log.append(f"{type(e).__name__}: {e}")
        results.append({"domain": text(tags.get(b"d", b"")), "selector": text(tags.get(b"s", b"")),
                        "algorithm": text(tags.get(b"a", b"")), "ok": ok,
                        "log": [] if ok else log[-5:]})
    out({"signatures": results})
    if not results:
        print("dkim-verify: the message has no DKIM-Signature", file=sys.stderr)
        return 1
    if not all(r["ok"] for r in results):
        print("dkim-verify: a signature does not verify", file=sys.stderr)
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description="Mail server probes (see the file header).")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--helo", default="probe.mailbake.test")
    sub = p.add_subparsers(dest="cmd", required=True)

    def hp(name):
        sp = sub.add_parser(name)
        sp.add_argument("host")
        sp.add_argument("port", type=int)
        return sp

    sp = hp("banner")
    sp.add_argument("--source")
    sp = hp("ehlo")
    sp.add_argument("--mode", choices=["plain", "starttls", "tls"], default="plain")
    sp = hp("auth-before-tls")
    sp.add_argument("user")
    sp.add_argument("password")
    sp = hp("submit")
    sp.add_argument("--mode", choices=["plain", "starttls", "tls"], required=True)
    sp.add_argument("--user")
    sp.add_argument("--password")
    sp.add_argument("--from", dest="sender", required=True)
    sp.add_argument("--to", action="append", required=True)
    sp.add_argument("--subject", default="mailbake probe")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--body-file")
    g.add_argument("--message-file")
    sp.add_argument("--source")
    sp.add_argument("--dkim-key")
    sp.add_argument("--dkim-selector", default="s1")
    sp.add_argument("--tamper", action="store_true")
    sp.add_argument("--forged-header", action="append", default=[])
    sp = hp("burst")
    sp.add_argument("--mode", choices=["starttls", "tls"], required=True)
    sp.add_argument("--user", required=True)
    sp.add_argument("--password", required=True)
    sp.add_argument("--from", dest="sender", required=True)
    sp.add_argument("--to", required=True)
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--tag", required=True)
    sp.add_argument("--max-attempts", type=int)
    sp = hp("relay")
    sp.add_argument("--from", dest="sender", required=True)
    sp.add_argument("--to", required=True)
    sp = hp("cert")
    sp.add_argument("--mode", choices=["starttls", "tls"], required=True)
    sp = sub.add_parser("dkim-verify")
    sp.add_argument("--records", required=True)

    args = p.parse_args()
    handlers = {"banner": cmd_banner, "ehlo": cmd_ehlo, "auth-before-tls": cmd_auth_before_tls,
                "submit": cmd_submit, "burst": cmd_burst, "relay": cmd_relay, "cert": cmd_cert,
                "dkim-verify": cmd_dkim_verify}
    try:
        return handlers[args.cmd](args) or 0
    except ProbeError as e:
        print(f"probe {args.cmd}: {e}", file=sys.stderr)
        return 1
    except (OSError, smtplib.SMTPException, ssl.SSLError) as e:
        print(f"probe {args.cmd} {getattr(args, 'host', '')}:{getattr(args, 'port', '')}: "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
