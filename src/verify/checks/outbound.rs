//! Outbound port 25 cannot be tested from wherever verify runs (a laptop's provider often
//! blocks it, and that says nothing about the host's); the check says how to test it from
//! the host itself.

use super::host;
use crate::site::HostName;
use crate::verify::{Check, Context, Section};

pub(super) fn check<R, D>(ctx: &Context<R, D>, name: &HostName) -> Check {
    let h = host(ctx, name);
    // Both values are validated names ([a-z0-9.-] and [a-z0-9_-]): nothing to quote.
    let command = format!(
        "ssh {}@{} 'timeout 10 bash -c \"exec 3<>/dev/tcp/gmail-smtp-in.l.google.com/25 && head -n 1 <&3\"'",
        ctx.site.ssh.user, h.fqdn
    );
    Check::of(Section::Outbound, h.fqdn.as_str()).host(name).warn(
        "not tested: whether the host may open connections to port 25 can only be seen from the host (many VPS providers block it until asked)",
        format!(
            "run on the host; a `220 mx.google.com ESMTP ...` line means outbound mail can leave, a timeout means the provider blocks port 25 (ask them to open it):\n{command}"
        ),
    )
}
