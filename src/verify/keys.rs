//! The DKIM records the secrets store says each selector must publish. This is verify's only
//! contact with the store, kept in one place so a change of the store's API is a local edit.

use std::collections::BTreeMap;

use crate::secrets::SecretStore;
use crate::site::Site;

/// `(domain, selector)` -> the TXT value from the store's key, or why there is none.
pub type DkimKeys = BTreeMap<(String, String), Result<String, String>>;

/// Every active and retired selector of every domain, looked up in `store` (`Err`: why there
/// is no store to look in).
pub fn dkim_keys(site: &Site, store: Result<&SecretStore, &str>) -> DkimKeys {
    let mut keys = DkimKeys::new();
    for (domain, d) in site.domains.iter() {
        for selector in d.dkim.selectors.keys().chain(d.dkim.retired.keys()) {
            let value = match store {
                Err(why) => Err(why.to_string()),
                Ok(store) => store
                    .dkim_key(domain, selector)
                    .map(|key| key.dns_txt_value())
                    .map_err(|e| e.to_string()),
            };
            keys.insert((domain.to_string(), selector.to_string()), value);
        }
    }
    keys
}
