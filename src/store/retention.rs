//! Pure: what the store deletes to stay within `retention_days` and `max_mb`.

/// Rows older than this (ms since the epoch) are deleted: `now_ms` less `days`.
pub fn cutoff_ms(now_ms: i64, days: u32) -> i64 {
    now_ms.saturating_sub(i64::from(days) * 86_400_000)
}

/// How many of the oldest frames to delete when the database takes `size` bytes for `rows`
/// frames and may take `max` bytes: the share of rows over the limit plus a tenth of the limit's
/// worth (so that it is not trimmed again at the next write), at least one when over; 0 when
/// within it.
pub fn excess_rows(size: u64, max: u64, rows: u64) -> u64 {
    if size <= max || rows == 0 || size == 0 {
        return 0;
    }
    let target = max - max / 10;
    let over = size - target;
    let n = (u128::from(rows) * u128::from(over)).div_ceil(u128::from(size));
    (n as u64).clamp(1, rows)
}
