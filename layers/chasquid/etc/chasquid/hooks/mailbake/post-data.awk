# mailbake's checks on every message chasquid accepts, run by hooks/post-data before the
# message is queued (after chasquid's DKIM signing, so a refusal here also means nothing
# signed leaves). POSIX awk (mawk on Ubuntu and Debian), in the C locale: every string
# function works on bytes.
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
#   3. authenticated mail only: the header block is plain header fields (no blanks before a
#      colon, no control characters), with exactly one From: holding exactly one address;
#      the envelope sender and the addresses of From:, Sender:, Resent-From: and
#      Resent-Sender: are addresses the user owns (their mailbox, with any +suffix, and
#      addresses whose aliases deliver to it) or that the site's send_as grants them, and
#      their local parts use only characters that nobody reads as another address.
#
# Run with `-v mailbake_library=1` the BEGIN block does nothing, so that tests can call the
# functions on their own from a second program file.

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

# The position of the last `@` in `address` (0 when there is none).
function last_at(address,    i) {
    for (i = length(address); i > 0; i--)
        if (substr(address, i, 1) == "@")
            return i
    return 0
}

# `address` as the policy keys it: local part lowercased, cut at the first suffix separator,
# without drop characters; domain lowercased. "" when it is not local@domain. The same key
# as chasquid's for every local part that plain_local() accepts (ASCII, where chasquid's
# PRECIS mapping is lowercasing), and the same as `mailbake check` uses for site names.
function key_of(address,    at, local, domain, i, c, out) {
    at = last_at(address)
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

# Whether the local part of `address` is one that chasquid and every mail reader take
# literally: ASCII letters, digits, `.`, `_`, `-` and the suffix separators. Everything
# else may name another address after a mapping the hook does not make: Unicode width and
# case folding (chasquid's PRECIS: fullwidth letters, the KELVIN SIGN), RFC 2047 decoding
# (`=?utf-8?q?boss?=`), quoting and escapes (`"boss"`, `\boss`). The site's own names are
# within this set, so only addresses the catch-all or a send_as domain would grant are lost.
function plain_local(address,    at, local, i, c) {
    at = last_at(address)
    if (at <= 1)
        return 0
    local = substr(address, 1, at - 1)
    for (i = 1; i <= length(local); i++) {
        c = substr(local, i, 1)
        if (c !~ /[A-Za-z0-9._-]/ && !(suffix_separators != "" && index(suffix_separators, c)))
            return 0
    }
    return 1
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
    if (!plain_local(address))
        return 0
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

# The name of a header field line, lowercased: the text before the colon, which RFC 5322
# allows to be followed by blanks (obsolete syntax) before the colon, anywhere in the line.
# Sets header_blanks to 1 when there are such blanks, and header_written to the name as written. "" when the line is no header field:
# no colon, an empty name, or a name with a byte outside `!`..`~` (RFC 5322's ftext).
function header_name(line,    colon, name) {
    header_blanks = 0
    colon = index(line, ":")
    if (colon <= 1)
        return ""
    name = substr(line, 1, colon - 1)
    if (name ~ /[ \t]+$/) {
        header_blanks = 1
        sub(/[ \t]+$/, "", name)
    }
    if (name == "" || name ~ /[^!-~]/)
        return ""
    header_written = name
    return tolower(name)
}

# The one address of a mailbox header value (unfolded): an addr-spec, or a name-addr
# `display name <addr-spec>`, with comments anywhere. "" when the value is anything else:
# a group, several addresses, unbalanced quotes, comments or brackets, a quoted or
# commented local part, an unquoted `@` or `<` in the display name, text after `>`. A
# header that one reader could see differently from another is how forgeries get through,
# so it is refused rather than guessed. Comments may nest; quoted pairs are skipped in
# quoted strings and comments. Sets mailbox_several to 1 when a comma outside quotes and
# comments separates several mailboxes.
function mailbox_of(value,    i, c, len, depth, inq, tok, lt, gt, a, name) {
    QUOTED = "\001"
    mailbox_several = 0
    tok = ""
    depth = 0
    inq = 0
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
        } else if (c == ",") {
            mailbox_several = 1
            return ""
        } else if (c == ")" || c == ";" || c == ":" || c == "\\" || c == "[" || c == "]") {
            return ""
        } else {
            tok = tok c
        }
    }
    if (inq || depth > 0)
        return ""
    gsub(/^[ \t]+|[ \t]+$/, "", tok)
    lt = index(tok, "<")
    if (lt) {
        gt = index(tok, ">")
        if (gt < lt || substr(tok, gt + 1) != "")
            return ""
        a = substr(tok, lt + 1, gt - lt - 1)
        name = substr(tok, 1, lt - 1)
        # The display name is words and quoted strings, nothing that looks like an address.
        if (name ~ /[@<>]/)
            return ""
    } else {
        a = tok
    }
    # Exactly one `@`: more than one is no address, and readers split it differently.
    if (a == "" || a ~ /[ \t<>]/ || index(a, QUOTED) || index(a, "@") != last_at(a) || !last_at(a))
        return ""
    return a
}

# Refuses what `user` may not send as: the envelope sender, then every sender header
# (`kind` names them in the reason).
function check_sender(user, address, kind) {
    if (!plain_local(address))
        refuse("5.7.1 " shown(address) " (" kind ") has characters this server does not accept in an authenticated sender; use letters, digits, '.', '_', '-' and '" suffix_separators "' before the @")
    if (!may_send_as(user, address))
        refuse("5.7.1 " shown(user) " may not send as " shown(address) " (" kind "); use your own address")
}

function main(    user, max_value, watched, line, line_number, r, n, current, kind_of, value_of, name, count, kind, i, j, k, m, a, rcpt, dest, copies, sender) {
    load_policy(ENVIRON["MAILBAKE_POLICY"])
    user = ENVIRON["AUTH_AS"]
    max_value = 16384

    # The header block: up to the first empty line. The sender headers are kept (unfolded:
    # a continuation line keeps its white space) for authenticated mail.
    watched["from"] = "From:"
    watched["sender"] = "Sender:"
    watched["resent-from"] = "Resent-From:"
    watched["resent-sender"] = "Resent-Sender:"
    n = 0
    line_number = 0
    current = 0
    while ((r = getline line) > 0) {
        line_number++
        if (line == "")
            break
        if (user != "" && line ~ /[\001-\010\012-\037\177]/)
            refuse("5.7.1 line " line_number " of the header block holds a control character; remove it")
        if (line ~ /^[ \t]/) {
            if (current && length(value_of[current]) <= max_value)
                value_of[current] = value_of[current] line
            continue
        }
        current = 0
        if (tolower(substr(line, 1, 11)) == "x-mailbake-")
            refuse("5.7.1 X-Mailbake-* headers are reserved for this server; remove " shown(substr(line, 1, index(line ":", ":") - 1)))
        if (user == "")
            continue
        name = header_name(line)
        if (name == "")
            refuse("5.7.1 line " line_number " of the header block is not a header field (Name: value); fix or remove it")
        if (header_blanks)
            refuse("5.7.1 the " shown(header_written) " header has blanks before its colon; write " shown(header_written) ": without them")
        if (name in watched) {
            current = ++n
            kind_of[n] = watched[name]
            value_of[n] = substr(line, index(line, ":") + 1)
            count[name]++
        }
    }
    if (r < 0)
        defer("4.3.0 mailbake: cannot read the message")

    # Copies per final destination, over every recipient of the message.
    m = split(ENVIRON["RCPT_TO"], rcpt, " ")
    for (i = 1; i <= m; i++) {
        k = split(destinations_of(rcpt[i]), dest, " ")
        for (j = 1; j <= k; j++)
            if (++copies[dest[j]] > copies_limit)
                refuse("5.5.3 this message would reach one mailbox more than " copies_limit " times; send it to fewer of this site's addresses")
    }

    if (user == "")
        return

    sender = ENVIRON["MAIL_FROM"]
    if (sender == "<>" || sender == "")
        refuse("5.7.1 authenticated mail needs your own address as the envelope sender, not <>")
    check_sender(user, sender, "envelope sender")
    if (count["from"] == 0)
        refuse("5.7.1 the message has no From: header; add exactly one, with your own address")
    if (count["from"] > 1)
        refuse("5.7.1 the message has " count["from"] " From: headers; send exactly one From: header, with your own address")
    if (count["sender"] > 1)
        refuse("5.7.1 the message has " count["sender"] " Sender: headers; send at most one")
    for (i = 1; i <= n; i++) {
        kind = kind_of[i]
        if (length(value_of[i]) > max_value)
            refuse("5.7.1 the " kind " header is too long to check")
        a = mailbox_of(value_of[i])
        if (a == "") {
            if (mailbox_several)
                refuse("5.7.1 the " kind " header lists several addresses; write exactly one address, your own, as Name <you@example.com>")
            refuse("5.7.1 the " kind " header is not one address this server can check; write it as Name <you@example.com>")
        }
        check_sender(user, a, kind " header")
    }
}

BEGIN {
    if (!mailbake_library) {
        main()
        exit 0
    }
}
