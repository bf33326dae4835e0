# mailbake auth guard: bans the addresses that keep failing SMTP AUTH, run by auth-guard.
# POSIX awk (mawk on Ubuntu 22.04 and Debian 12) plus systime(), in the C locale.
#
# chasquid logs every refused login to its mail log (the journal) as
#   <address>:<port> auth failed for <user>
# where the user part comes from the client, so it is never parsed: only the address at the
# very start of the journal entry's MESSAGE, which chasquid writes, is. journalctl's JSON
# output is one entry per line with MESSAGE escaped, so a user name carrying a newline and a
# forged second line stays inside its own entry, after the real address.
#
# Every AUTH_GUARD_TICK seconds the new entries are read (journalctl keeps its place in a
# cursor file), and an address with AUTH_GUARD_FAILURES failures within AUTH_GUARD_WINDOW
# seconds of its first one gets a blackhole route for AUTH_GUARD_BAN seconds: the kernel
# drops every reply to it, on every port. IPv4 addresses are banned alone (/32), IPv6 ones
# with their /64 (one host's usual allocation, so a new address from it does not reset the
# count). Loopback is never banned. Routes carry protocol AUTH_GUARD_PROTO, so the service
# removes exactly its own at start and stop (auth-guard flush).

function setting(name, default_value,    v) {
    v = ENVIRON[name]
    if (v == "")
        return default_value
    if (v !~ /^[1-9][0-9]*$/) {
        print "auth-guard: " name "=" v " is not a positive whole number" > "/dev/stderr"
        exit 2
    }
    return v + 0
}

function say(text) {
    print "auth-guard: " text > "/dev/stderr"
    fflush("/dev/stderr")
}

# The start of an entry's MESSAGE, decoded far enough to read the address (journalctl writes
# a MESSAGE that is not valid UTF-8 as an array of byte values); "" without one.
function message_of(line,    i, rest, end, n, bytes, out, k) {
    i = index(line, "\"MESSAGE\":")
    if (!i)
        return ""
    rest = substr(line, i + 10)
    if (substr(rest, 1, 1) == "\"")
        return substr(rest, 2, 80)
    if (substr(rest, 1, 1) != "[")
        return ""
    end = index(rest, "]")
    if (!end)
        return ""
    n = split(substr(rest, 2, end - 2), bytes, ",")
    out = ""
    for (k = 1; k <= n && k <= 80; k++) {
        if (bytes[k] !~ /^[0-9]+$/ || bytes[k] + 0 > 255)
            return ""
        out = out sprintf("%c", bytes[k] + 0)
    }
    return out
}

function entry_time(line,    i, digits) {
    i = index(line, "\"__REALTIME_TIMESTAMP\":\"")
    if (!i)
        return systime()
    digits = substr(line, i + 24)
    digits = substr(digits, 1, index(digits, "\"") - 1)
    if (digits !~ /^[0-9]+$/ || length(digits) <= 6)
        return systime()
    return substr(digits, 1, length(digits) - 6) + 0
}

# An IPv4 address as Go writes it (chasquid's log): four decimal numbers up to 255, without
# leading zeros (inet_pton and Go read "010" differently, so it is refused).
function ipv4_ok(address,    parts, n, k) {
    n = split(address, parts, ".")
    if (n != 4)
        return 0
    for (k = 1; k <= 4; k++)
        if (parts[k] !~ /^[0-9]+$/ || length(parts[k]) > 3 || parts[k] + 0 > 255 \
            || (length(parts[k]) > 1 && substr(parts[k], 1, 1) == "0"))
            return 0
    return 1
}

# The value of a group of up to four hex digits.
function hex_value(digits,    k, v) {
    v = 0
    for (k = 1; k <= length(digits); k++)
        v = v * 16 + index("0123456789abcdef", substr(digits, k, 1)) - 1
    return v
}

# An IPv6 address split into its eight groups g[1..8], in lower case without leading zeros
# (one spelling per address); 1 when it is one, 0 when not. The forms of RFC 4291 2.2: one to
# four hex digits per group, at most one "::" standing for one or more zero groups, and a
# dotted IPv4 address in place of the last two groups. No zone (%eth0).
function ipv6_groups(address, g,    a, last, tail, v4, halves, n, h, t, head, rest, k, missing) {
    a = tolower(address)
    if (a !~ /^[0-9a-f:.]+$/ || index(a, ":::") || !index(a, ":"))
        return 0
    if (index(a, ".")) {
        last = a
        while (index(last, ":"))
            last = substr(last, index(last, ":") + 1)
        if (!ipv4_ok(last))
            return 0
        split(last, v4, ".")
        tail = sprintf("%x:%x", v4[1] * 256 + v4[2], v4[3] * 256 + v4[4])
        a = substr(a, 1, length(a) - length(last)) tail
    }
    n = split(a, halves, "::")
    if (n > 2)
        return 0
    h = (halves[1] == "") ? 0 : split(halves[1], head, ":")
    t = (n == 1 || halves[2] == "") ? 0 : split(halves[2], rest, ":")
    if ((n == 1 && h != 8) || (n == 2 && h + t > 7))
        return 0
    missing = 8 - h - t
    for (k = 1; k <= h; k++)
        g[k] = head[k]
    for (k = 1; k <= missing; k++)
        g[h + k] = "0"
    for (k = 1; k <= t; k++)
        g[h + missing + k] = rest[k]
    for (k = 1; k <= 8; k++) {
        if (g[k] !~ /^[0-9a-f]+$/ || length(g[k]) > 4)
            return 0
        sub(/^0+/, "", g[k])
        if (g[k] == "")
            g[k] = "0"
    }
    return 1
}

# The network of `bits` (16, 32, 48 or 64) around an IPv6 address, as "a:b:c::/48"; "" when
# it is not an IPv6 address.
function ipv6_prefix(address, bits,    g, k, out) {
    if (!ipv6_groups(address, g))
        return ""
    out = ""
    for (k = 1; k <= bits / 16; k++)
        out = out g[k] ":"
    return out ":/" bits
}

function ipv6_prefix64(address) {
    return ipv6_prefix(address, 64)
}

# One spelling of an IPv6 address, as a /128 ban target.
function ipv6_host(address,    g) {
    if (!ipv6_groups(address, g))
        return ""
    return g[1] ":" g[2] ":" g[3] ":" g[4] ":" g[5] ":" g[6] ":" g[7] ":" g[8] "/128"
}

# The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), or "".
function mapped_ipv4(address,    g, k, hi, lo) {
    if (!ipv6_groups(address, g))
        return ""
    for (k = 1; k <= 5; k++)
        if (g[k] != "0")
            return ""
    if (g[6] != "ffff")
        return ""
    hi = hex_value(g[7])
    lo = hex_value(g[8])
    return int(hi / 256) "." (hi % 256) "." int(lo / 256) "." (lo % 256)
}

# What to ban for a client address from chasquid's log, or "" (loopback, unspecified,
# malformed): an IPv4 address alone, an IPv6 address with its /64.
function target_of(address,    v4, g) {
    v4 = mapped_ipv4(address)
    if (v4 == "" && ipv4_ok(address))
        v4 = address
    if (v4 != "")
        return (v4 ~ /^127\./ || v4 == "0.0.0.0") ? "" : v4 "/32"
    if (!ipv6_groups(address, g))
        return ""
    if (g[1] g[2] g[3] g[4] g[5] g[6] g[7] == "0000000" && (g[8] == "1" || g[8] == "0"))
        return ""
    return ipv6_prefix(address, 64)
}

# The /48 whose budget an IPv6 client's failures also count against; "" for IPv4.
function budget_of(address) {
    if (mapped_ipv4(address) != "" || ipv4_ok(address))
        return ""
    return ipv6_prefix(address, 48)
}

# `value` as `width` binary digits.
function binary(value, width,    out, k) {
    out = ""
    for (k = 0; k < width; k++) {
        out = (value % 2) out
        value = int(value / 2)
    }
    return out
}

# An address as its bits ("4" or "6", a colon, then 32 or 128 binary digits); "" when it is
# not one. An IPv4-mapped IPv6 address gives its IPv4 bits.
function address_bits(address,    v4, parts, g, k, out) {
    v4 = mapped_ipv4(address)
    if (v4 == "" && ipv4_ok(address))
        v4 = address
    if (v4 != "") {
        split(v4, parts, ".")
        out = "4:"
        for (k = 1; k <= 4; k++)
            out = out binary(parts[k] + 0, 8)
        return out
    }
    if (!ipv6_groups(address, g))
        return ""
    out = "6:"
    for (k = 1; k <= 8; k++)
        out = out binary(hex_value(g[k]), 16)
    return out
}

# Adds a network ("203.0.113.0/24", "2001:db8::/48") to the allowlist; 0 when it is not one.
function allow_add(network,    slash, bits, prefix, all) {
    slash = index(network, "/")
    if (!slash)
        return 0
    bits = substr(network, slash + 1)
    all = address_bits(substr(network, 1, slash - 1))
    if (all == "" || bits !~ /^[0-9]+$/ || bits + 0 < 1 || bits + 0 > length(all) - 2)
        return 0
    prefix = substr(all, 1, 2 + bits)
    allow[prefix] = 1
    return 1
}

# Whether an address is in a network of the allowlist.
function allowed(address,    all, prefix) {
    all = address_bits(address)
    if (all == "")
        return 0
    for (prefix in allow)
        if (substr(all, 1, length(prefix)) == prefix)
            return 1
    return 0
}

# Reads the allowlist file (one network per line, # comments); a missing file is an empty list.
function load_allow(path,    line, r, n) {
    n = 0
    while ((r = (getline line < path)) > 0) {
        sub(/#.*/, "", line)
        gsub(/[ \t\r]/, "", line)
        if (line == "")
            continue
        if (allow_add(line))
            n++
        else {
            gsub(/[^0-9A-Za-z.:\/]/, "?", line)
            say("ignoring line " line " of " path ": not a network such as 203.0.113.0/24")
        }
    }
    close(path)
    return n
}

function has_cursor(path,    line, r) {
    r = (getline line < path)
    close(path)
    return r >= 0
}

function family(target) {
    return index(target, ":") ? "-6" : "-4"
}

function route(verb, target) {
    return system("ip " family(target) " route " verb " blackhole " target " proto " proto \
        " 2>/dev/null") == 0
}

# Whether the kernel now drops what goes to `address`: asking for its route fails (a blackhole
# route has none to give) instead of naming one that wins over the ban, such as the connected
# route of the host's own network, which is more specific or has a better metric.
function dropped(address) {
    return system("ip route get " address " >/dev/null 2>&1") != 0
}

# Adds the blackhole route for `target` and checks that it takes `address`'s traffic; removes it
# again when it does not. 1 when the ban works.
function try_ban(target, address) {
    if (!route("add", target))
        return 0
    if (dropped(address))
        return 1
    route("del", target)
    return 0
}

function forget(key) {
    if (key in first) {
        delete count[key]
        delete first[key]
        tracked--
    }
}

# Bans `target` for a failure from `address`; logs "banned" only for a ban the kernel applies.
# A /64 or /48 that holds the host's own network is not dropped (its connected route wins), so
# the single address is banned instead (/128, more specific than any connected route).
function ban(target, address, why, now,    host) {
    if (bans >= max_bans) {
        if (!full_logged)
            say("already " bans " bans (AUTH_GUARD_MAX_BANS); not banning " target " or others until some expire")
        full_logged = 1
        return
    }
    if (!try_ban(target, address)) {
        host = index(target, ":") ? ipv6_host(address) : ""
        if (host == "" || host in banned || !try_ban(host, address)) {
            say("could not ban " target ": the kernel still routes " address " (ip route add failed, or a route of this host wins); its failures keep being counted")
            return
        }
        say("banned " host " only: " target " holds a network of this host, whose own route wins over a ban of it")
        target = host
    }
    banned[target] = now + ban_seconds
    bans++
    full_logged = 0
    say("banned " target " for " ban_seconds "s after " why)
}

function lift(t) {
    if (!route("del", t))
        say("could not lift the ban on " t " (ip route del failed)")
    else
        say("lifted the ban on " t)
    delete banned[t]
    bans--
}

function expire(now,    t) {
    for (t in banned)
        if (banned[t] <= now)
            lift(t)
    for (t in first)
        if (now - first[t] > window)
            forget(t)
}

# Counts one failure at time t against `key`; 1 when that reaches `limit` within the window.
function count_failure(key, t, limit) {
    if (!(key in first) || t - first[key] > window) {
        if (!(key in first)) {
            if (tracked >= max_tracked) {
                say("tracking " tracked " addresses; forgetting them all to stay bounded")
                split("", first)
                split("", count)
                tracked = 0
            }
            tracked++
        }
        first[key] = t
        count[key] = 0
    }
    return ++count[key] >= limit
}

function handle(line,    message, address, target, budget, t) {
    message = message_of(line)
    if (message ~ /^[0-9.]+:[0-9]+ auth failed for /)
        address = substr(message, 1, index(message, ":") - 1)
    else if (message ~ /^\[[0-9A-Fa-f:.]+\]:[0-9]+ auth failed for /)
        address = substr(message, 2, index(message, "]") - 2)
    else
        return
    # An IPv4-mapped address is its IPv4 address: counted, banned and probed as one.
    if (mapped_ipv4(address) != "")
        address = mapped_ipv4(address)
    target = target_of(address)
    if (target == "" || target in banned || ipv6_host(address) in banned || allowed(address))
        return
    # An IPv6 client's failures count for its /64 and for its /48 (up to 65536 /64s, which
    # would otherwise each have the whole budget).
    budget = budget_of(address)
    if (budget in banned)
        return
    t = entry_time(line)
    if (budget != "" && count_failure(budget, t, failures_48)) {
        forget(budget)
        forget(target)
        ban(budget, address, failures_48 " failed logins from " budget " within " window "s", systime())
        return
    }
    if (count_failure(target, t, failures)) {
        forget(target)
        ban(target, address, failures " failed logins within " window "s", systime())
    }
}

