//! SOURCE_DATE_EPOCH: the one timestamp every artifact carries (tar and image mtimes, the
//! time mke2fs records), so that the same inputs give the same bytes on any day.

/// The timestamp used when none is given: 2026-01-01T00:00:00Z. Fixed, so that a build
/// without the variable is still reproducible; `build` and `image` both default to it.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_767_225_600;
