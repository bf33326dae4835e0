//! SOURCE_DATE_EPOCH: the one timestamp every artifact carries (tar and image mtimes, the
//! time mke2fs records), so that the same inputs give the same bytes on any day.

/// The timestamp used when none is given: 2026-01-01T00:00:00Z. Fixed, so that a build
/// without the variable is still reproducible; `build` and `image` both default to it.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_767_225_600;

/// The latest SOURCE_DATE_EPOCH accepted: 2242-03-16T12:56:31Z, the largest time a tar
/// header's 11 octal digits hold (ext4 and cpio go further). A later value is a typo (a
/// millisecond timestamp, digits pasted twice), and would give tar mtimes no reader agrees on.
pub const MAX_SOURCE_DATE_EPOCH: u64 = 0o77_777_777_777;

/// `--source-date-epoch` or `SOURCE_DATE_EPOCH`: whole seconds since 1970, at most
/// [`MAX_SOURCE_DATE_EPOCH`]. Each refusal says what is wrong with the value.
pub fn parse(text: &str) -> Result<u64, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "it is empty (SOURCE_DATE_EPOCH set to nothing?); give whole seconds since 1970-01-01 UTC, e.g. {DEFAULT_SOURCE_DATE_EPOCH}, or unset SOURCE_DATE_EPOCH for that default"
        ));
    }
    let seconds: u64 = text.parse().map_err(|_| {
        format!(
            "`{}` is not whole seconds since 1970-01-01 UTC; e.g. {DEFAULT_SOURCE_DATE_EPOCH} (`date +%s`)",
            text.escape_debug()
        )
    })?;
    if seconds > MAX_SOURCE_DATE_EPOCH {
        return Err(format!(
            "{seconds} is after the year 2242, the latest time a tar header holds ({MAX_SOURCE_DATE_EPOCH}); a millisecond timestamp? give seconds, e.g. {DEFAULT_SOURCE_DATE_EPOCH}"
        ));
    }
    Ok(seconds)
}

/// [`parse`] for the commands that take a signed time (`mailbake image`).
pub fn parse_signed(text: &str) -> Result<i64, String> {
    parse(text).map(|s| i64::try_from(s).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_whole_seconds_up_to_what_tar_holds() {
        assert_eq!(parse("1767225600"), Ok(1_767_225_600));
        assert_eq!(
            parse(&MAX_SOURCE_DATE_EPOCH.to_string()),
            Ok(MAX_SOURCE_DATE_EPOCH)
        );
        for (text, part) in [
            ("", "it is empty"),
            ("  ", "it is empty"),
            ("99999999999999", "after the year 2242"),
            ("8589934592", "after the year 2242"),
            ("-1", "not whole seconds"),
            ("1e9", "not whole seconds"),
        ] {
            let said = parse(text).unwrap_err();
            assert!(said.contains(part), "{text:?}: {said}");
        }
    }
}
