//! The form in which chasquid compares local parts, shared by `mailbake check` (names that
//! collide in it are refused) and the post-data hook's policy (which keys addresses by it).
//!
//! chasquid looks users and aliases up after dropping its `drop_characters` and cutting at
//! its `suffix_separators`; mailbake leaves both at chasquid's defaults. Site names are ASCII
//! `[a-z0-9._-]` (see [`super::LocalPart`]), where chasquid's PRECIS mapping is lowercasing.

/// chasquid's default `suffix_separators`: `i+tag@` is `i@`.
pub const SUFFIX_SEPARATORS: &str = "+";
/// chasquid's default `drop_characters`: `i.x@` is `ix@`.
pub const DROP_CHARACTERS: &str = ".";

/// A local part as chasquid compares it: lowercase, without suffix, without drop characters.
pub fn chasquid_local_key(local: &str) -> String {
    let base = local
        .split(|c| SUFFIX_SEPARATORS.contains(c))
        .next()
        .unwrap_or_default();
    base.chars()
        .filter(|c| !DROP_CHARACTERS.contains(*c))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_suffixes_and_ascii_case_do_not_count() {
        assert_eq!(chasquid_local_key("J.K+News"), "jk");
        assert_eq!(chasquid_local_key("post.master"), "postmaster");
        assert_eq!(chasquid_local_key("i"), "i");
        assert_eq!(chasquid_local_key("a-b_c"), "a-b_c");
    }
}
