//! How a setting is written, for every section of the config (the
//! collector's own and those its parts define, such as an Alertmanager's).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Longest duration any setting takes.
const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// A duration setting (`"30s"`, `"10m"`): at least 1 s, at most 30 days.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let value = humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write it like \"30s\", \"10m\" or \"1h\""
        ))
    })?;
    if value.is_zero() {
        return Err(serde::de::Error::custom("a duration of zero: write at least 1s"));
    }
    if value > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is longer than 30 days, the most this setting takes"
        )));
    }
    Ok(value)
}
