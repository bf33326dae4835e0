# mailbake's checks on every message chasquid accepts, run by hooks/post-data before the
# message is queued (after chasquid's DKIM signing, so a refusal here also means nothing
# signed leaves). POSIX awk (mawk on Ubuntu 22.04 and Debian 12), in the C locale.
#
# Input: the message on stdin with LF line endings (chasquid's form); only the header block
# is read, then awk exits: chasquid ignores the EPIPE of the rest, so a 50 MB message costs
# no more than a small one. The session comes from chasquid's environment: AUTH_AS (empty
# when not authenticated), MAIL_FROM, RCPT_TO (space separated). The site's policy comes
# from the file named by MAILBAKE_POLICY (hooks/mailbake/policy, rendered by mailbake).
#
# Refusals exit 20 (chasquid answers 554) with the reason as the last line of stdout, which
# chasquid sends to the client and logs. A policy that cannot be read exits 75 (451: the
# sender retries) rather than letting mail through unchecked.
#
# The checks:
#   1. no header named X-Mailbake-*: the prefix is reserved for this server, which adds none
#      itself, so a message carrying one is forging a verdict (refused inbound and submitted);
#   2. no final destination gets more than copies_per_destination copies (a catch-all must
#      not turn one message with 40 random recipients into 40 copies at one mailbox);
#   3. authenticated mail only: the envelope sender and every address of every From: header
#      are addresses the user owns (their mailbox, with any +suffix, and addresses whose
#      aliases deliver to it) or that the site's send_as grants them.

function refuse(why) {
    print why
    exit 20
}

function defer(why) {
    print why
    exit 75
}

# Something safe to echo to the client: printable ASCII without spaces, bounded.
function shown(text) {
    gsub(/[^!-~]/, "?", text)
    return substr(text, 1, 200)
}

function load_policy(path,    line, f, n, r, i, d) {
    if (path == "")
        defer("4.3.5 mailbake: no mail policy configured (MAILBAKE_POLICY)")
    n = 0
    while ((r = getline line < path) > 0) {
        n++
        if (line ~ /^#/ || line ~ /^[ \t]*$/)
            continue
        i = split(line, f, " ")
        if (f[1] == "suffix_separators" && i <= 2) {
            suffix_separators = f[2]
        } else if (f[1] == "drop_characters" && i <= 2) {
            drop_characters = f[2]
        } else if (f[1] == "copies_per_destination" && i == 2 && f[2] ~ /^[1-9][0-9]*$/) {
            copies_limit = f[2] + 0
        } else if (f[1] == "domain" && i == 2) {
            local_domain[f[2]] = 1
        } else if (f[1] == "address" && i >= 2) {
            d = " "
            for (r = 3; r <= i; r++)
                d = d f[r] " "
            destinations[f[2]] = d
        } else if (f[1] == "send_as" && i == 3) {
            send_as[f[2] SUBSEP f[3]] = 1
        } else {
            defer("4.3.5 mailbake: mail policy line " n " is not understood")
        }
    }
    close(path)
    if (r < 0 || n == 0)
        defer("4.3.5 mailbake: the mail policy cannot be read")
    if (copies_limit == 0)
        defer("4.3.5 mailbake: the mail policy sets no copies_per_destination")
}

# `address` as the policy keys it: local part lowercased, cut at the first suffix separator,
# without drop characters; domain lowercased. "" when it is not local@domain.
function key_of(address,    at, local, domain, i, c, out) {
    at = 0
    for (i = length(address); i > 0; i--)
        if (substr(address, i, 1) == "@") {
            at = i
            break
        }
    if (at <= 1 || at == length(address))
        return ""
    local = tolower(substr(address, 1, at - 1))
    domain = tolower(substr(address, at + 1))
    out = ""
    for (i = 1; i <= length(local); i++) {
        c = substr(local, i, 1)
        if (suffix_separators != "" && index(suffix_separators, c))
            break
        if (drop_characters == "" || !index(drop_characters, c))
            out = out c
    }
    return out "@" domain
}

function domain_of(key) {
    return substr(key, index(key, "@") + 1)
}

# The final destinations of a recipient, space padded (" a b ").
function destinations_of(address,    key, domain) {
    key = key_of(address)
    if (key == "")
        return " " tolower(address) " "
    domain = domain_of(key)
    if (!(domain in local_domain))
        return " " tolower(address) " "
    if (key in destinations)
        return destinations[key]
    if (("*@" domain) in destinations)
        return destinations["*@" domain]
    return " " key " "
}

function may_send_as(user, address,    key, domain) {
    key = key_of(address)
    if (key == "")
        return 0
    domain = domain_of(key)
    if ((user SUBSEP key) in send_as || (user SUBSEP ("*@" domain)) in send_as)
        return 1
    if (!(domain in local_domain))
        return 0
    if (key in destinations)
        return index(destinations[key], " " user " ") > 0
    if (("*@" domain) in destinations)
        return index(destinations["*@" domain], " " user " ") > 0
    return 0
}

# The addresses of a From: header value (unfolded) into `out`; returns how many, or -1 when
# the value is not a mailbox list this parser is sure about (which is refused: a From: that
# one reader sees differently from another is how forgeries get through). Comments are
# dropped, quoted strings stand for display names and quoted local parts, `<...>` holds
# the address of a name-addr, commas split mailboxes, a group's `name:` and `;` are skipped.
function from_addresses(value, out,    n, i, c, len, depth, inq, inang, tok, parts, k, t, a, lt, gt) {
    QUOTED = "\001"
    n = 0
    tok = ""
    depth = 0
    inq = 0
    inang = 0
    len = length(value)
    for (i = 1; i <= len; i++) {
        c = substr(value, i, 1)
        if (inq) {
            if (c == "\\")
                i++
            else if (c == "\"")
                inq = 0
            continue
        }
        if (depth > 0) {
            if (c == "\\")
                i++
            else if (c == "(")
                depth++
            else if (c == ")")
                depth--
            continue
        }
        if (c == "(") {
            depth = 1
            tok = tok " "
        } else if (c == "\"") {
            inq = 1
            tok = tok QUOTED
        } else if (c == ")") {
            return -1
        } else if (c == "<") {
            if (inang)
                return -1
            inang = 1
            tok = tok c
        } else if (c == ">") {
            if (!inang)
                return -1
            inang = 0
            tok = tok c
        } else if (!inang && (c == "," || c == ";")) {
            parts[++n] = tok
            tok = ""
        } else if (!inang && c == ":") {
            # A group: what came before is its name, which must not look like an address.
            if (index(tok, "@"))
                return -1
            tok = ""
        } else {
            tok = tok c
        }
    }
    if (inq || depth > 0 || inang)
        return -1
    parts[++n] = tok
    k = 0
    for (i = 1; i <= n; i++) {
        t = parts[i]
        gsub(/^[ \t]+|[ \t]+$/, "", t)
        if (t == "")
            continue
        lt = index(t, "<")
        if (lt) {
            gt = index(t, ">")
            a = substr(t, lt + 1, gt - lt - 1)
            # Nothing after the address; no unquoted `@` in the display name before it.
            if (substr(t, gt + 1) ~ /[^ \t]/ || index(substr(t, 1, lt - 1), "@"))
                return -1
        } else {
            a = t
        }
        if (a == "" || a ~ /[ \t<>:]/ || index(a, QUOTED) || !index(a, "@"))
            return -1
        out[++k] = a
    }
    return k
}

BEGIN {
    load_policy(ENVIRON["MAILBAKE_POLICY"])
    user = ENVIRON["AUTH_AS"]
    max_from = 16384

    # The header block: up to the first empty line.
    from_value = ""
    from_count = 0
    in_from = 0
    while ((r = getline line) > 0) {
        if (line == "")
            break
        if (line ~ /^[ \t]/) {
            # A continuation line: unfolding keeps its white space. Only From: is kept.
            if (in_from && length(from_value) <= max_from)
                from_value = from_value line
            continue
        }
        start = tolower(substr(line, 1, 16))
        if (substr(start, 1, 11) == "x-mailbake-")
            refuse("5.7.1 X-Mailbake-* headers are reserved for this server; remove " shown(substr(line, 1, index(line ":", ":") - 1)))
        in_from = 0
        if (start ~ /^from[ \t]*:/) {
            in_from = 1
            from_count++
            from_value = from_value (from_count > 1 ? "," : "") substr(line, index(line, ":") + 1)
        }
    }
    if (r < 0)
        defer("4.3.0 mailbake: cannot read the message")

    # Copies per final destination, over every recipient of the message.
    n = split(ENVIRON["RCPT_TO"], rcpt, " ")
    for (i = 1; i <= n; i++) {
        m = split(destinations_of(rcpt[i]), dest, " ")
        for (j = 1; j <= m; j++)
            if (++copies[dest[j]] > copies_limit)
                refuse("5.5.3 this message would reach one mailbox more than " copies_limit " times; send it to fewer of this site's addresses")
    }

    if (user == "")
        exit 0

    sender = ENVIRON["MAIL_FROM"]
    if (sender == "<>" || sender == "")
        refuse("5.7.1 authenticated mail needs your own address as the envelope sender, not <>")
    if (!may_send_as(user, sender))
        refuse("5.7.1 " shown(user) " may not send as " shown(sender) " (envelope sender); use your own address")
    if (from_count == 0)
        refuse("5.7.1 the message has no From: header; add one with your own address")
    if (length(from_value) > max_from)
        refuse("5.7.1 the From: header is too long to check")
    k = from_addresses(from_value, from)
    if (k <= 0)
        refuse("5.7.1 the From: header is not a list of addresses this server can check; write it as Name <you@example.com>")
    for (i = 1; i <= k; i++)
        if (!may_send_as(user, from[i]))
            refuse("5.7.1 " shown(user) " may not send as " shown(from[i]) " (From: header); use your own address")
    exit 0
}
