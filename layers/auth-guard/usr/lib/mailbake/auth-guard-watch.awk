# mailbake auth guard, the watch loop: run by `auth-guard watch` together with auth-guard.awk,
# which holds every rule (and is tested on its own, without this loop).

BEGIN {
    failures = setting("AUTH_GUARD_FAILURES", 10)
    window = setting("AUTH_GUARD_WINDOW", 600)
    ban_seconds = setting("AUTH_GUARD_BAN", 3600)
    tick = setting("AUTH_GUARD_TICK", 5)
    max_bans = setting("AUTH_GUARD_MAX_BANS", 10000)
    failures_48 = setting("AUTH_GUARD_FAILURES_48", 3 * failures)
    max_tracked = 100000
    # Checked by auth-guard before it runs this program: a number, a path and journal
    # matches without shell metacharacters.
    proto = ENVIRON["AUTH_GUARD_PROTO"]
    journal = "journalctl --quiet --no-pager --output=json --output-fields=MESSAGE" \
        " --cursor-file=" ENVIRON["AUTH_GUARD_CURSOR"] " --since=-" window "s " \
        ENVIRON["AUTH_GUARD_MATCH"]
    allowed_networks = load_allow(ENVIRON["AUTH_GUARD_ALLOW"])
    say("watching (" failures " failures within " window "s from an address, or " failures_48 \
        " from an IPv6 /48: banned for " ban_seconds "s; " allowed_networks " networks never banned)")
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
