//! The records as a JSON array, for tools.
//!
//! Each element: `name` (absolute, no trailing dot), `type`, `value` (as in the registrar
//! table: TXT whole and unquoted, MX as `<preference> <exchange>`), `ttl`, `domain` (the zone
//! the record belongs in: the mail domain, or the reverse zone for PTR), and when they apply
//! `host` (the site's host the record is about) and `note` (what to do beyond publishing it).
//! Keys always come in this order and records in the set's order, so the text is stable.

use serde::Serialize;

use super::records::RecordSet;

#[derive(Serialize)]
struct JsonRecord<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    value: String,
    ttl: u32,
    domain: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub fn render(set: &RecordSet) -> String {
    let records: Vec<JsonRecord> = set
        .records
        .iter()
        .map(|r| {
            // The MTA-STS policy has no record of its own; it rides along in the note so a
            // tool reading only the JSON can still publish it.
            let policy = set
                .mta_sts
                .iter()
                .find(|p| r.name == format!("_mta-sts.{}", p.domain));
            let note = match (&r.note, policy) {
                (Some(note), Some(p)) => Some(format!("{note}; policy:\n{}", p.text)),
                (note, _) => note.clone(),
            };
            JsonRecord {
                name: &r.name,
                kind: r.data.type_name(),
                value: r.data.to_string(),
                ttl: r.ttl,
                domain: &r.zone,
                host: r.host.as_ref().map(|h| h.as_str()),
                note,
            }
        })
        .collect();
    // Serializing plain strings and integers cannot fail; fall back to an empty array rather
    // than panic if that ever changes.
    let mut text = serde_json::to_string_pretty(&records).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}
