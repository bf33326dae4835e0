//! chasquid's users database: scrypt hashes in protobuf text format.
//!
//! Schema (chasquid `internal/userdb`):
//! ```text
//! message ProtoDB  { map<string, Password> users = 1; }
//! message Password { oneof scheme { Scrypt scrypt = 2; Plain plain = 3; Denied denied = 4; } }
//! message Scrypt   { uint64 logN = 1; int32 r = 2; int32 p = 3; int32 keyLen = 4;
//!                    bytes salt = 5; bytes encrypted = 6; }
//! ```
//! mailbake renders entries sorted by key with every salt/hash byte escaped as `\xNN`, so the
//! same users give the same bytes (reproducible seeds) and the file is plain ASCII.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::SecretsError;
use super::password::Password;
use super::textproto::{self, Field, Value};

/// scrypt cost parameters chasquid-util uses for new users (N = 2^14, r = 8, p = 1).
pub const SCRYPT_LOG_N: u8 = 14;
pub const SCRYPT_R: u32 = 8;
pub const SCRYPT_P: u32 = 1;
pub const SCRYPT_KEY_LEN: usize = 32;
pub const SCRYPT_SALT_LEN: usize = 16;

/// Upper bound on scrypt memory (128 * r * N bytes) accepted from a file: verification with
/// absurd parameters would exhaust memory, and chasquid would choke on them too.
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;

/// One user's scrypt entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScryptHash {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
    pub key_len: usize,
    pub salt: Vec<u8>,
    pub encrypted: Vec<u8>,
}

/// A user's credential. chasquid also knows `plain`, which mailbake refuses to read or write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Scrypt(ScryptHash),
    /// A receive-only user (`denied {}`, chasquid >= 1.13): mail is accepted for it, but it
    /// cannot authenticate.
    Denied,
}

/// Hashes `password` with chasquid-util's parameters and the given salt.
pub fn hash_password(password: &str, salt: &[u8]) -> ScryptHash {
    let encrypted = scrypt_raw(
        password.as_bytes(),
        salt,
        SCRYPT_LOG_N,
        SCRYPT_R,
        SCRYPT_P,
        SCRYPT_KEY_LEN,
    )
    // The parameters are constants known to be valid; failure would be a programming error.
    .expect("chasquid-util's scrypt parameters are valid");
    ScryptHash {
        log_n: SCRYPT_LOG_N,
        r: SCRYPT_R,
        p: SCRYPT_P,
        key_len: SCRYPT_KEY_LEN,
        salt: salt.to_vec(),
        encrypted,
    }
}

fn scrypt_raw(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
    key_len: usize,
) -> Result<Vec<u8>, String> {
    let params = scrypt::Params::new(log_n, r, p).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; key_len];
    scrypt::scrypt(password, salt, &params, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

impl ScryptHash {
    /// Hashes a new password with a fresh random 16-byte salt.
    pub fn new_random(password: &Password) -> Result<Self, SecretsError> {
        let mut salt = [0u8; SCRYPT_SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| SecretsError::Random(e.to_string()))?;
        Ok(hash_password(password.expose(), &salt))
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &str) -> bool {
        let Ok(computed) = scrypt_raw(
            password.as_bytes(),
            &self.salt,
            self.log_n,
            self.r,
            self.p,
            self.key_len,
        ) else {
            return false;
        };
        computed.len() == self.encrypted.len()
            && computed
                .iter()
                .zip(&self.encrypted)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Checks the parameters are ones chasquid can use (zeros make it panic) and that
    /// verifying would not need unbounded memory.
    fn check(&self) -> Result<(), String> {
        if self.log_n == 0 || self.log_n >= 32 || self.r == 0 || self.p == 0 || self.key_len == 0 {
            return Err(format!(
                "invalid scrypt parameters logN={} r={} p={} keyLen={}",
                self.log_n, self.r, self.p, self.key_len
            ));
        }
        let memory = 128u64
            .saturating_mul(u64::from(self.r))
            .saturating_mul(1u64 << self.log_n);
        if memory > MAX_SCRYPT_MEMORY {
            return Err(format!(
                "scrypt parameters logN={} r={} need more than 1 GiB",
                self.log_n, self.r
            ));
        }
        if self.salt.is_empty() {
            return Err("empty salt".to_string());
        }
        if self.encrypted.len() != self.key_len {
            return Err(format!(
                "hash is {} bytes but keyLen is {}",
                self.encrypted.len(),
                self.key_len
            ));
        }
        scrypt::Params::new(self.log_n, self.r, self.p).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A whole users database for one domain, keyed by normalised local part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserDb {
    users: BTreeMap<String, Credential>,
}

impl UserDb {
    pub fn new() -> Self {
        Self::default()
    }

    /// Local parts, sorted.
    pub fn users(&self) -> impl Iterator<Item = (&str, &Credential)> {
        self.users.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, local: &str) -> Option<&Credential> {
        self.users.get(local)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Inserts or replaces; callers decide whether replacing is allowed.
    pub fn insert(&mut self, local: String, credential: Credential) -> Option<Credential> {
        self.users.insert(local, credential)
    }

    pub fn remove(&mut self, local: &str) -> Option<Credential> {
        self.users.remove(local)
    }

    /// Whether `local` exists, has a scrypt hash and `password` matches it.
    pub fn authenticate(&self, local: &str, password: &str) -> bool {
        matches!(self.users.get(local), Some(Credential::Scrypt(h)) if h.verify(password))
    }

    /// chasquid's text format, entries sorted by key. An empty database is an empty file,
    /// which chasquid reads as "no users".
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (local, cred) in &self.users {
            out.push_str("users: {\n");
            out.push_str(&format!("  key: {}\n", textproto::quote_text(local)));
            out.push_str("  value: {\n");
            match cred {
                Credential::Scrypt(h) => {
                    out.push_str("    scrypt: {\n");
                    out.push_str(&format!("      logN: {}\n", h.log_n));
                    out.push_str(&format!("      r: {}\n", h.r));
                    out.push_str(&format!("      p: {}\n", h.p));
                    out.push_str(&format!("      keyLen: {}\n", h.key_len));
                    out.push_str(&format!(
                        "      salt: {}\n",
                        textproto::quote_all_hex(&h.salt)
                    ));
                    out.push_str(&format!(
                        "      encrypted: {}\n",
                        textproto::quote_all_hex(&h.encrypted)
                    ));
                    out.push_str("    }\n");
                }
                Credential::Denied => out.push_str("    denied: {\n    }\n"),
            }
            out.push_str("  }\n}\n");
        }
        out
    }

    /// Parses a users database (`path` is only used in error messages).
    pub fn parse(src: &[u8], path: &Path) -> Result<Self, SecretsError> {
        let syntax = |line: usize, message: String| SecretsError::UserDbSyntax {
            path: path.to_path_buf(),
            line,
            message,
        };
        let fields = textproto::parse(src).map_err(|e| syntax(e.line, e.message))?;
        let mut db = UserDb::new();
        for field in fields {
            if field.name != "users" {
                return Err(syntax(
                    field.line,
                    format!("unknown field {:?}", field.name),
                ));
            }
            let Value::Message(entry) = field.value else {
                return Err(syntax(field.line, "\"users\" must be a message".into()));
            };
            let (local, cred) = parse_entry(&entry).map_err(|m| syntax(field.line, m))?;
            if db.users.insert(local.clone(), cred).is_some() {
                return Err(syntax(field.line, format!("user {local:?} appears twice")));
            }
        }
        Ok(db)
    }
}

/// One `users { key: ... value: { ... } }` map entry.
fn parse_entry(entry: &[Field]) -> Result<(String, Credential), String> {
    let mut key = None;
    let mut value = None;
    for f in entry {
        match (f.name.as_str(), &f.value) {
            ("key", Value::Bytes(b)) if key.is_none() => key = Some(b.clone()),
            ("value", Value::Message(m)) if value.is_none() => value = Some(m),
            (name, _) => {
                return Err(format!(
                    "unexpected or repeated field {name:?} in a user entry"
                ));
            }
        }
    }
    let key = key.ok_or("user entry without a key")?;
    let key = String::from_utf8(key).map_err(|_| "user name is not UTF-8".to_string())?;
    let value = value.ok_or_else(|| format!("user {key:?} has no value"))?;
    let [scheme] = value.as_slice() else {
        return Err(format!(
            "user {key:?} must have exactly one password scheme"
        ));
    };
    let cred = match (scheme.name.as_str(), &scheme.value) {
        ("scrypt", Value::Message(m)) => {
            Credential::Scrypt(parse_scrypt(m).map_err(|e| format!("user {key:?}: {e}"))?)
        }
        ("denied", Value::Message(m)) if m.is_empty() => Credential::Denied,
        ("plain", _) => {
            return Err(format!(
                "user {key:?} has a plaintext password, which mailbake never stores; remove it and add the user again"
            ));
        }
        (other, _) => return Err(format!("user {key:?}: unknown password scheme {other:?}")),
    };
    Ok((key, cred))
}

fn parse_scrypt(fields: &[Field]) -> Result<ScryptHash, String> {
    let (mut log_n, mut r, mut p, mut key_len, mut salt, mut encrypted) =
        (None, None, None, None, None, None);
    for f in fields {
        fn number<T: std::str::FromStr>(f: &Field) -> Result<T, String> {
            match &f.value {
                Value::Bare(s) => s
                    .parse()
                    .map_err(|_| format!("{}: {s:?} is not a valid number here", f.name)),
                _ => Err(format!("{} must be a number", f.name)),
            }
        }
        fn bytes(f: &Field) -> Result<Vec<u8>, String> {
            match &f.value {
                Value::Bytes(b) => Ok(b.clone()),
                _ => Err(format!("{} must be a quoted string", f.name)),
            }
        }
        let repeated = match f.name.as_str() {
            "logN" => log_n.replace(number::<u8>(f)?).is_some(),
            "r" => r.replace(number::<u32>(f)?).is_some(),
            "p" => p.replace(number::<u32>(f)?).is_some(),
            "keyLen" => key_len.replace(number::<usize>(f)?).is_some(),
            "salt" => salt.replace(bytes(f)?).is_some(),
            "encrypted" => encrypted.replace(bytes(f)?).is_some(),
            other => return Err(format!("unknown scrypt field {other:?}")),
        };
        if repeated {
            return Err(format!("field {:?} repeated", f.name));
        }
    }
    // Missing numeric fields are zero in protobuf, which chasquid cannot use: check() refuses.
    let hash = ScryptHash {
        log_n: log_n.unwrap_or(0),
        r: r.unwrap_or(0),
        p: p.unwrap_or(0),
        key_len: key_len.unwrap_or(0),
        salt: salt.unwrap_or_default(),
        encrypted: encrypted.unwrap_or_default(),
    };
    hash.check()?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> UserDb {
        let mut db = UserDb::new();
        // Cheap parameters: these tests are about the format, not the cost.
        let enc = scrypt_raw(b"pw", b"salt", 4, 8, 1, 32).unwrap_or_default();
        db.insert(
            "zed".into(),
            Credential::Scrypt(ScryptHash {
                log_n: 4,
                r: 8,
                p: 1,
                key_len: 32,
                salt: b"salt".to_vec(),
                encrypted: enc,
            }),
        );
        db.insert("abe".into(), Credential::Denied);
        db
    }

    #[test]
    fn render_parse_round_trip_sorted() {
        let db = sample();
        let text = db.render();
        assert!(text.find("\"abe\"") < text.find("\"zed\""), "{text}");
        assert!(text.is_ascii());
        let back = UserDb::parse(text.as_bytes(), Path::new("users"));
        assert_eq!(back.ok(), Some(db.clone()));
        assert!(db.authenticate("zed", "pw"));
        assert!(!db.authenticate("zed", "pW"));
        assert!(!db.authenticate("abe", "pw"));
    }

    #[test]
    fn refuses_unusable_entries() {
        for (src, needle) in [
            (
                "users: { key: \"a\" value: { plain: { password: \"x\" } } }",
                "plaintext",
            ),
            (
                "users: { key: \"a\" value: { scrypt: { logN: 14 r: 8 p: 1 keyLen: 32 salt: \"s\" } } }",
                "keyLen",
            ),
            (
                "users: { key: \"a\" value: { scrypt: { r: 8 p: 1 keyLen: 1 salt: \"s\" encrypted: \"e\" } } }",
                "invalid scrypt",
            ),
            (
                "users: { key: \"a\" value: { scrypt: { logN: 30 r: 8 p: 1 keyLen: 1 salt: \"s\" encrypted: \"e\" } } }",
                "1 GiB",
            ),
            (
                "users: { key: \"a\" value: { denied: {} } }\nusers: { key: \"a\" value: { denied: {} } }",
                "twice",
            ),
            ("hosts: {}", "unknown field"),
        ] {
            match UserDb::parse(src.as_bytes(), Path::new("users")) {
                Ok(_) => panic!("accepted: {src}"),
                Err(e) => assert!(e.to_string().contains(needle), "{e}"),
            }
        }
    }
}
