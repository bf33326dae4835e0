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

function ipv4_ok(address,    parts, n, k) {
    n = split(address, parts, ".")
    if (n != 4)
        return 0
    for (k = 1; k <= 4; k++)
        if (parts[k] !~ /^[0-9]+$/ || length(parts[k]) > 3 || parts[k] + 0 > 255)
            return 0
    return 1
}

# The first four groups of an IPv6 address, as "a:b:c:d::/64"; "" when it is not one.
function ipv6_prefix64(address,    halves, head, tail, h, t, groups, n, k, missing) {
    if (address !~ /^[0-9a-f:]+$/ || index(address, ":::"))
        return ""
    n = split(address, halves, "::")
    if (n > 2)
        return ""
    h = (halves[1] == "") ? 0 : split(halves[1], head, ":")
    t = (n == 1 || halves[2] == "") ? 0 : split(halves[2], tail, ":")
    if (n == 1 && h != 8)
        return ""
    if (n == 2 && h + t > 7)
        return ""
    missing = 8 - h - t
    for (k = 1; k <= h; k++)
        groups[k] = head[k]
    for (k = 1; k <= missing; k++)
        groups[h + k] = "0"
    for (k = 1; k <= t; k++)
        groups[h + missing + k] = tail[k]
    for (k = 1; k <= 8; k++)
        if (groups[k] !~ /^[0-9a-f]+$/ || length(groups[k]) > 4)
            return ""
    return groups[1] ":" groups[2] ":" groups[3] ":" groups[4] "::/64"
}

# What to ban for a client address from chasquid's log, or "" (loopback, malformed).
function target_of(address,    lower) {
    lower = tolower(address)
    if (substr(lower, 1, 7) == "::ffff:" && ipv4_ok(substr(lower, 8)))
        lower = substr(lower, 8)
    if (ipv4_ok(lower))
        return (lower ~ /^127\./) ? "" : lower "/32"
    if (lower == "::1")
        return ""
    return ipv6_prefix64(lower)
}

function has_cursor(path,    line, r) {
    r = (getline line < path)
    close(path)
    return r >= 0
}

function family(target) {
    return index(target, ":") ? "-6" : "-4"
}

function ban(target, now) {
    if (bans >= max_bans) {
        if (!full_logged)
            say("already " bans " bans (AUTH_GUARD_MAX_BANS); not banning " target " or others until some expire")
        full_logged = 1
        return
    }
    if (system("ip " family(target) " route add blackhole " target " proto " proto) != 0) {
        say("could not ban " target " (ip route add failed); its failures keep being counted")
        return
    }
    banned[target] = now + ban_seconds
    bans++
    full_logged = 0
    delete count[target]
    delete first[target]
    tracked--
    say("banned " target " for " ban_seconds "s after " failures " failed logins within " window "s")
}

function expire(now,    t) {
    for (t in banned) {
        if (banned[t] > now)
            continue
        if (system("ip " family(t) " route del blackhole " t " proto " proto) != 0)
            say("could not lift the ban on " t " (ip route del failed)")
        else
            say("lifted the ban on " t)
        delete banned[t]
        bans--
    }
    for (t in first) {
        if (now - first[t] > window) {
            delete first[t]
            delete count[t]
            tracked--
        }
    }
}

function handle(line,    message, address, target, t) {
    message = message_of(line)
    if (message ~ /^[0-9.]+:[0-9]+ auth failed for /)
        address = substr(message, 1, index(message, ":") - 1)
    else if (message ~ /^\[[0-9A-Fa-f:.]+\]:[0-9]+ auth failed for /)
        address = substr(message, 2, index(message, "]") - 2)
    else
        return
    target = target_of(address)
    if (target == "" || target in banned)
        return
    t = entry_time(line)
    if (!(target in first) || t - first[target] > window) {
        if (!(target in first)) {
            if (tracked >= max_tracked) {
                say("tracking " tracked " addresses; forgetting them all to stay bounded")
                split("", first)
                split("", count)
                tracked = 0
            }
            tracked++
        }
        first[target] = t
        count[target] = 0
    }
    if (++count[target] >= failures)
        ban(target, systime())
}

BEGIN {
    failures = setting("AUTH_GUARD_FAILURES", 10)
    window = setting("AUTH_GUARD_WINDOW", 600)
    ban_seconds = setting("AUTH_GUARD_BAN", 3600)
    tick = setting("AUTH_GUARD_TICK", 5)
    max_bans = setting("AUTH_GUARD_MAX_BANS", 10000)
    max_tracked = 100000
    # Checked by auth-guard before it runs this program: a number, a path and journal
    # matches without shell metacharacters.
    proto = ENVIRON["AUTH_GUARD_PROTO"]
    journal = "journalctl --quiet --no-pager --output=json --output-fields=MESSAGE" \
        " --cursor-file=" ENVIRON["AUTH_GUARD_CURSOR"] " --since=-" window "s " \
        ENVIRON["AUTH_GUARD_MATCH"]
    say("watching (" failures " failures within " window "s: banned for " ban_seconds "s)")
    cursor = ENVIRON["AUTH_GUARD_CURSOR"]
    for (;;) {
        while ((r = (journal | getline line)) > 0)
            handle(line)
        status = close(journal)
        # Until an entry has matched, journalctl has no cursor to save and exits 1: that is
        # "nothing yet" (right after boot), not a failure worth a line every tick.
        if (r < 0 || (status != 0 && has_cursor(cursor)))
            say("journalctl failed (exit status " status "); trying again in " tick "s")
        expire(systime())
        system("sleep " tick)
    }
}
