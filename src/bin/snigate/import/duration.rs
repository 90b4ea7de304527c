//! Durations as the routes file writes them: the largest unit that states a time exactly.

pub const MS_PER_SECOND: u64 = 1_000;
pub const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
pub const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
pub const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;

/// The units the schema's durations take besides `ms`, largest first.
const SCHEMA_TIME_UNITS: [(&str, u64); 4] =
    [("d", MS_PER_DAY), ("h", MS_PER_HOUR), ("m", MS_PER_MINUTE), ("s", MS_PER_SECOND)];

/// Milliseconds in the largest unit of the schema that states them exactly.
pub fn format_duration(millis: u64) -> String {
    for (unit, size) in SCHEMA_TIME_UNITS {
        if millis > 0 && millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}
