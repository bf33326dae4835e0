#!/bin/sh
# mailbake drain, the host's side. mailbake runs it over the operator's SSH as
#   sudo -n sh -c SCRIPT mailbake-drain MODE TIMEOUT FQDN
# with every word quoted (src/drain/shell.rs). It uses only what every mailbake image has
# (systemd, chasquid's units, a POSIX shell, tar), so a host built by an older mailbake
# can be drained too. Progress goes to stderr; stdout carries a tar of the queue items still
# there at the end, and nothing when the queue is empty.
#   MODE     smtp: close port 25 only; all: close 25, 587 and 465
#   TIMEOUT  seconds to wait for the queue to empty
#   FQDN     the host this is meant for; any other host is left alone
set -eu

mode=$1
timeout=$2
fqdn=$3
queue=/var/lib/chasquid/queue
units=/run/systemd/system
loopback=mailbake-drain-loopback.socket

say() {
    printf 'drain: %s\n' "$*" >&2
}

case "$timeout" in
    '' | *[!0-9]*)
        say "the timeout '$timeout' is not a number of seconds; nothing changed"
        exit 2
        ;;
esac

# The right machine? The seed sets the hostname to the host's fqdn (its PTR name).
name=$(hostname)
if [ "$name" != "$fqdn" ]; then
    say "this host is $name, not $fqdn; nothing changed"
    exit 3
fi

case "$mode" in
    smtp)
        close="chasquid-smtp.socket"
        requires="chasquid-submission.socket chasquid-submission_tls.socket"
        ;;
    all)
        close="chasquid-smtp.socket chasquid-submission.socket chasquid-submission_tls.socket"
        # chasquid will not run without any listener: give it one nobody outside can reach.
        requires=$loopback
        ;;
    *)
        say "unknown mode '$mode'; nothing changed"
        exit 2
        ;;
esac

# The packaged chasquid.service Requires= all three sockets: stopping one would stop chasquid
# too, and starting chasquid would open it again; and a drop-in cannot remove a dependency.
# So a unit of the same name in /run replaces the packaged one (the drop-ins in /etc still
# apply) until the next boot, which brings the packaged unit and all its ports back.
mkdir -p "$units"
tmp=$(mktemp "$units/.mailbake-drain.XXXXXX")
cat > "$tmp" <<EOF
# Written by mailbake drain: chasquid without the listeners being drained ($close).
# Runtime only: the next boot brings back the packaged unit and every port.
[Unit]
Description=chasquid mail daemon (draining: mailbake drain)
Documentation=man:chasquid(1)
Requires=$requires

[Service]
ExecStart=/usr/bin/chasquid
Type=simple
Restart=always
User=chasquid
Group=chasquid
ProtectSystem=full
EOF
chmod 0644 "$tmp"
mv -f "$tmp" "$units/chasquid.service"
if [ "$mode" = all ]; then
    tmp=$(mktemp "$units/.mailbake-drain.XXXXXX")
    cat > "$tmp" <<EOF
# Written by mailbake drain --all: chasquid's only listener while 25, 587 and 465 are closed.
[Socket]
ListenStream=127.0.0.1:10025
FileDescriptorName=smtp
Service=chasquid.service
EOF
    chmod 0644 "$tmp"
    mv -f "$tmp" "$units/$loopback"
fi
systemctl daemon-reload
if [ "$mode" = smtp ]; then
    systemctl stop "$loopback" 2>/dev/null || true
fi
# shellcheck disable=SC2086 # $close is a list of unit names
systemctl stop $close
say "closed $close: new connections are refused, and senders retry later"
if [ "$mode" = all ]; then
    # systemd refuses to start a socket whose service is already running ("Socket service
    # chasquid.service already active, refusing"), so the loopback listener cannot be added
    # under a running chasquid: stop it, and the restart below starts the loopback socket
    # with it (the unit above Requires= it).
    systemctl stop chasquid.service
fi

# chasquid has no command that retries its queue now: every message waits in its own send
# loop (1, 5, 10, then 20 minutes between attempts). A fresh start loads every queued message
# and tries it at once. The queue is fsynced files, and systemd holds the sockets that stay
# open, so nothing is lost and no client is refused meanwhile.
systemctl restart chasquid.service
sleep 1
if ! systemctl is-active --quiet chasquid.service; then
    say "chasquid did not start again:"
    journalctl -u chasquid.service -n 20 --no-pager -o cat >&2 || true
    exit 4
fi

count() {
    n=0
    for item in "$queue"/m:*; do
        [ -e "$item" ] && n=$((n + 1))
    done
    echo "$n"
}

start=$(date +%s)
left=$(count)
say "chasquid restarted: trying all $left queued message(s) now; waiting up to ${timeout}s"
while [ "$left" -gt 0 ] && [ $(($(date +%s) - start)) -lt "$timeout" ]; do
    sleep 1
    left=$(count)
done
took=$(($(date +%s) - start))
if [ "$left" -eq 0 ]; then
    say "the queue is empty after ${took}s"
    exit 0
fi
say "$left message(s) still queued after ${took}s"
# An item delivered between the count and tar is gone: not an error.
cd "$queue"
tar --ignore-failed-read -cf - -- m:*
