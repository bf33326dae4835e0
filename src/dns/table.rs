//! The registrar table: what a person types into a DNS provider's web form.
//!
//! Forms want the host relative to the domain (`@` for the apex), no trailing dots, and the
//! TXT value as one unquoted string (the form splits it, if the provider needs splitting at
//! all). Columns: Host, Type, Value, TTL, separated by at least two spaces; values never
//! contain two spaces in a row, so the columns can be told apart by machine too.
//!
//! Reverse zones are not something a registrar serves: they become plain instructions for the
//! VPS provider's panel instead (walkthrough steps 1 and 8).

use super::records::{Record, RecordSet, ZoneKind};

/// Values longer than this do not widen the Value column (a DKIM key would push every TTL
/// hundreds of columns to the right); the TTL of such a row simply follows its value.
const VALUE_COLUMN_MAX: usize = 64;

pub fn render(set: &RecordSet) -> String {
    let mut out = String::new();
    let mut reverse = Vec::new();
    for (zone, kind, records) in set.zones() {
        if kind == ZoneKind::Reverse {
            reverse.extend(records);
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{zone}\n"));
        let rows: Vec<[String; 4]> = records
            .iter()
            .map(|r| {
                [
                    relative(&r.name, zone),
                    r.data.type_name().to_string(),
                    r.data.to_string(),
                    r.ttl.to_string(),
                ]
            })
            .collect();
        let header = ["Host", "Type", "Value", "TTL"].map(String::from);
        let width = |col: usize, cap: usize| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|row| row[col].len())
                .filter(|len| *len <= cap)
                .max()
                .unwrap_or(0)
        };
        let widths = [
            width(0, usize::MAX),
            width(1, usize::MAX),
            width(2, VALUE_COLUMN_MAX),
        ];
        for row in std::iter::once(&header).chain(&rows) {
            out.push_str(&format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}\n",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            ));
        }
        for warning in set.warnings.iter().filter(|w| w.zone == zone) {
            out.push_str(&format!("WARNING: {warning}\n"));
        }
        for r in records.iter().filter(|r| r.note.is_some()) {
            notes(&mut out, set, r);
        }
    }
    if !reverse.is_empty() {
        out.push_str("\nReverse DNS (PTR): set it in your VPS provider's panel\n");
        for r in reverse {
            if let Some(note) = &r.note {
                out.push_str(&format!("- {note}\n"));
            }
        }
    }
    out
}

fn notes(out: &mut String, set: &RecordSet, r: &Record) {
    let Some(note) = &r.note else { return };
    out.push_str(&format!("Note ({}): {note}\n", r.name));
    if let Some(policy) = set
        .mta_sts
        .iter()
        .find(|p| r.name == format!("_mta-sts.{}", p.domain))
    {
        out.push_str(&format!("Policy for {}:\n", policy.url));
        for line in policy.text.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
}

/// `name` relative to `zone`: `@` for the apex, the leading labels otherwise.
pub fn relative(name: &str, zone: &str) -> String {
    if name == zone {
        "@".to_string()
    } else {
        name.strip_suffix(&format!(".{zone}"))
            .unwrap_or(name)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_to_the_zone() {
        assert_eq!(relative("example.com", "example.com"), "@");
        assert_eq!(
            relative("2026a._domainkey.example.com", "example.com"),
            "2026a._domainkey"
        );
        assert_eq!(relative("other.net", "example.com"), "other.net");
    }
}
