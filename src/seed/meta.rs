//! `meta-data`'s instance id.
//!
//! cloud-init runs its once-per-instance modules (write_files, users, ssh keys) when the
//! instance id changes. Deriving it from the seed's content makes that exactly "when the
//! seed changed": a rebuilt but identical seed is a no-op at boot, a rotated key or a new
//! address re-applies.

use sha2::{Digest, Sha256};

/// `mailbake-` and the first 128 bits (hex) of a digest over user-data and network-config.
/// Each part is length-prefixed so moving bytes from one file to the other changes the id.
pub fn instance_id(user_data: &[u8], network_config: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"mailbake seed v1\0");
    for part in [user_data, network_config] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    format!("mailbake-{}", hex::encode(&digest[..16]))
}
