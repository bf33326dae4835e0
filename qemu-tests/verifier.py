#!/usr/bin/python3
"""The second verifier: SPF, DKIM, DMARC, ARC and iprev of one received message, judged with
libraries that share no code with rspamd or Postfix: pyspf (python3-spf), dkimpy
(python3-dkim) and dnspython (python3-dnspython), asking the given DNS server only.

Run with Debian's /usr/bin/python3, inside the test network (where the DNS server is).

  verifier.py --dns IP --ip CLIENT --helo NAME --mail-from ADDR < message

Prints ONE JSON object:
  {"spf": "pass", "spf_domain": "example.com",
   "dkim": [{"d": "example.com", "s": "2026a-rsa", "a": "rsa-sha256", "result": "pass"}],
   "dmarc": "pass", "dmarc_domain": "example.com", "dmarc_policy": "quarantine",
   "arc": "none", "iprev": "pass", "iprev_name": "smtp.example.com"}

DMARC here is RFC 9989's: the policy record is found by its DNS tree walk (the From domain,
then, from a name of more than 7 labels, its last 7, then one label less each time; at most 8
queries), and alignment is relaxed (the only mode the test sites publish): pass when an SPF
pass or a DKIM pass is for a domain with the same organisational domain as the From header's,
taken as its last two labels (the test domains publish no `psd` records, for which RFC 9989's
walk finds the same organisational domain). Tags are read by name, so the `t` and `np` of
RFC 9989 and the removed `pct` change nothing here, as for a receiver that ignores them.
"""

import argparse
import email
import email.utils
import json
import sys

import dkim
import dns.resolver
import dns.reversename
import spf


def resolver_for(server):
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [server]
    r.timeout = 3
    r.lifetime = 6
    return r


def txt_records(r, name):
    try:
        answer = r.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(rr.strings).decode("utf-8", "replace") for rr in answer]


def org(domain):
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def check_dkim(message, r):
    def dnsfunc(name, timeout=5):
        values = txt_records(r, name.decode().rstrip(".") if isinstance(name, bytes) else name)
        return values[0].encode() if values else None

    headers = dkim.DKIM(message).headers
    count = sum(1 for (k, _) in headers if k.lower() == b"dkim-signature")
    results = []
    for idx in range(count):
        d = dkim.DKIM(message)
        try:
            ok = d.verify(idx=idx, dnsfunc=dnsfunc)
        except dkim.DKIMException:
            ok = False
        tags = d.signature_fields if hasattr(d, "signature_fields") and d.signature_fields else {}
        results.append({
            "d": tags.get(b"d", b"").decode(),
            "s": tags.get(b"s", b"").decode(),
            "a": tags.get(b"a", b"").decode(),
            "result": "pass" if ok else "fail",
        })
    return results


def check_iprev(ip, r):
    try:
        names = [str(rr.target).rstrip(".") for rr in r.resolve(dns.reversename.from_address(ip), "PTR")]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return "fail", None
    for name in names:
        for rtype in ("A", "AAAA"):
            try:
                if any(rr.address == ip for rr in r.resolve(name, rtype)):
                    return "pass", name
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                pass
    return "fail", names[0] if names else None


def tree_walk(domain):
    """The names RFC 9989's DNS tree walk asks for the DMARC record of `domain`, in order."""
    labels = domain.rstrip(".").split(".")
    names = [f"_dmarc.{domain}"]
    start = len(labels) - 7 if len(labels) > 7 else 1
    names.extend(f"_dmarc.{'.'.join(labels[i:])}" for i in range(start, len(labels)))
    return names


def check_dmarc(message, spf_result, spf_domain, dkim_results, r):
    parsed = email.message_from_bytes(message)
    from_domain = email.utils.parseaddr(parsed.get("From", ""))[1].rpartition("@")[2].lower()
    policy = None
    for name in tree_walk(from_domain):
        records = [t for t in txt_records(r, name) if t.startswith("v=DMARC1")]
        if records:
            tags = dict(p.strip().split("=", 1) for p in records[0].split(";") if "=" in p)
            policy = tags.get("p", "").strip()
            break
    if policy is None:
        return "none", from_domain, None
    aligned_spf = spf_result == "pass" and org(spf_domain) == org(from_domain)
    aligned_dkim = any(d["result"] == "pass" and org(d["d"]) == org(from_domain) for d in dkim_results)
    return ("pass" if aligned_spf or aligned_dkim else "fail"), from_domain, policy


def main():
    p = argparse.ArgumentParser(description="Second verifier (see the file header).")
    p.add_argument("--dns", required=True)
    p.add_argument("--ip", required=True)
    p.add_argument("--helo", required=True)
    p.add_argument("--mail-from", required=True)
    args = p.parse_args()
    message = sys.stdin.buffer.read()
    r = resolver_for(args.dns)
    # pyspf and dkimpy's own lookups go through dnspython's default resolver: point it here.
    dns.resolver.default_resolver = r

    spf_result, _ = spf.check2(i=args.ip, s=args.mail_from, h=args.helo)
    spf_domain = args.mail_from.rpartition("@")[2] or args.helo
    dkim_results = check_dkim(message, r)
    dmarc, dmarc_domain, policy = check_dmarc(message, spf_result, spf_domain, dkim_results, r)
    try:
        cv, _, _ = dkim.arc_verify(message, dnsfunc=lambda n, timeout=5: (txt_records(r, n.decode().rstrip(".")) or [""])[0].encode())
        arc = cv.decode() if isinstance(cv, bytes) else str(cv)
    except dkim.DKIMException as e:
        arc = f"fail ({e})"
    iprev, iprev_name = check_iprev(args.ip, r)
    print(json.dumps({
        "spf": spf_result, "spf_domain": spf_domain, "dkim": dkim_results,
        "dmarc": dmarc, "dmarc_domain": dmarc_domain, "dmarc_policy": policy,
        "arc": arc, "iprev": iprev, "iprev_name": iprev_name,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
