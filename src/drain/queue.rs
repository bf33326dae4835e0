//! chasquid's queue items, read for the operator: who sent a message, to whom, and why it is
//! still there.
//!
//! Each queued message is a file `m:<id>` in chasquid's `data_dir/queue/`, the protobuf text
//! form of chasquid's `queue.Message` (`internal/queue/queue.proto`): `ID`, `from`, `To` (the
//! envelope recipients), one `rcpt` per final recipient after aliases (`address`, `type`,
//! `status`, `last_failure_message`, `original_address`), `data` and `created_at_ts`. proto3
//! leaves fields at their default out (status `PENDING`, type `EMAIL`, empty strings), so
//! absent means default. The same files, put into another chasquid's queue directory, are
//! loaded and sent by it at start-up: that is how exported items are re-injected.

use crate::secrets::textproto::{self, Field, Value};

/// The name chasquid gives queue item files.
pub const ITEM_PREFIX: &str = "m:";

/// Whether `name` has the form chasquid gives its queue files: `m:` and an id in base64url
/// (letters, digits, `-`, `_`, `=` padding), at most 100 characters. Anything else from the
/// host is refused: it becomes a file name in the export and a line of its `SHA256SUMS`, and
/// a newline in it forged a line there.
pub fn is_item_name(name: &str) -> bool {
    name.strip_prefix(ITEM_PREFIX).is_some_and(|id| {
        !id.is_empty()
            && id.len() <= 100
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
    })
}

/// One queued message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueItem {
    pub id: String,
    /// The envelope sender (`<>` for a bounce).
    pub from: String,
    /// The envelope recipients as received.
    pub to: Vec<String>,
    /// Where it goes, after aliases, each with its state.
    pub recipients: Vec<Recipient>,
    /// Seconds since 1970, when chasquid accepted it.
    pub created_at: Option<i64>,
    /// Size of the message itself.
    pub size: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// `PENDING` (still tried), `SENT` or `FAILED` (bounced).
    pub status: String,
    /// The last delivery error; empty before the first failure.
    pub last_failure: String,
}

impl QueueItem {
    /// Parses the text of queue item `name` (its file name, for messages).
    pub fn parse(name: &str, text: &[u8]) -> Result<QueueItem, String> {
        let fields = textproto::parse(text)
            .map_err(|e| format!("queue item {name}, line {}: {}", e.line, e.message))?;
        let mut item = QueueItem {
            id: name.strip_prefix(ITEM_PREFIX).unwrap_or(name).to_string(),
            from: String::new(),
            to: Vec::new(),
            recipients: Vec::new(),
            created_at: None,
            size: 0,
        };
        for field in &fields {
            match (field.name.as_str(), &field.value) {
                ("ID", Value::Bytes(b)) => item.id = text_of(b),
                ("from", Value::Bytes(b)) => item.from = text_of(b),
                ("To", Value::Bytes(b)) => item.to.push(text_of(b)),
                ("data", Value::Bytes(b)) => item.size = b.len(),
                ("rcpt", Value::Message(m)) => item.recipients.push(recipient(m)),
                ("created_at_ts", Value::Message(m)) => {
                    item.created_at = bare(m, "seconds").and_then(|s| s.parse().ok());
                }
                _ => {}
            }
        }
        if item.recipients.is_empty() && item.to.is_empty() {
            return Err(format!(
                "queue item {name} names no recipient: not a chasquid queue item"
            ));
        }
        Ok(item)
    }

    /// The recipients still waiting for delivery.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients.iter().filter(|r| r.status == "PENDING")
    }
}

fn recipient(fields: &[Field]) -> Recipient {
    let mut r = Recipient {
        address: String::new(),
        status: "PENDING".into(),
        last_failure: String::new(),
    };
    for field in fields {
        match (field.name.as_str(), &field.value) {
            ("address", Value::Bytes(b)) => r.address = text_of(b),
            ("status", Value::Bare(s)) => r.status = s.clone(),
            ("last_failure_message", Value::Bytes(b)) => r.last_failure = text_of(b),
            _ => {}
        }
    }
    r
}

fn bare<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields.iter().find_map(|f| match &f.value {
        Value::Bare(s) if f.name == name => Some(s.as_str()),
        _ => None,
    })
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue item as chasquid 1.19 writes one (prototext, multi-line; its random extra
    /// spaces included): one recipient failed for good, one still pending after an error, one
    /// never tried (defaults left out).
    const ITEM: &str = r#"ID:  "Xz9_ab-c"
from:  "i@example.com"
To:  "someone@gmail4.test"
To:  "other@example.net"
rcpt:  {
  address:  "someone@gmail4.test"
  last_failure_message:  "all MXs failed:\n  mx.gmail4.test: dial tcp 198.51.100.25:25: connect: connection refused"
  original_address:  "someone@gmail4.test"
}
rcpt:  {
  address:  "gone@example.net"
  status:  FAILED
  last_failure_message:  "550 5.1.1 no such user"
  original_address:  "other@example.net"
}
rcpt:  {
  address:  "| /bin/true"
  type:  PIPE
}
data:  "Subject: hi\r\n\r\nhello \303\251\r\n"
created_at_ts:  {
  seconds:  1764583200
  nanos:  12345
}
"#;

    #[test]
    fn reads_envelope_recipients_states_and_errors() {
        let item = QueueItem::parse("m:Xz9_ab-c", ITEM.as_bytes()).unwrap();
        assert_eq!(item.id, "Xz9_ab-c");
        assert_eq!(item.from, "i@example.com");
        assert_eq!(item.to, ["someone@gmail4.test", "other@example.net"]);
        assert_eq!(item.created_at, Some(1764583200));
        assert_eq!(item.size, "Subject: hi\r\n\r\nhello é\r\n".len());
        let states: Vec<(&str, &str)> = item
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("someone@gmail4.test", "PENDING"),
                ("gone@example.net", "FAILED"),
                ("| /bin/true", "PENDING")
            ]
        );
        assert!(
            item.recipients[0]
                .last_failure
                .contains("connection refused")
        );
        assert_eq!(item.pending().count(), 2);
    }

    #[test]
    fn what_is_not_a_queue_item_says_so() {
        let err = QueueItem::parse("m:x", b"ID: \"x\"\n").unwrap_err();
        assert!(err.contains("not a chasquid queue item"), "{err}");
        let err = QueueItem::parse("m:y", b"rcpt: {\n address: \"a\"\n").unwrap_err();
        assert!(err.contains("m:y, line"), "{err}");
    }
}
