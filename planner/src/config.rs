//! Fletch's settings as a DataFusion config extension, so `SET fletch.<name> = ...`
//! works in SQL and the values travel with every task like DataFusion's own.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::common::{DataFusionError, Result};

extensions_options! {
    /// Settings under the `fletch.` prefix.
    pub struct FletchOptions {
        /// Memory limit of every executor, for table fragments, exchange buffers and
        /// operators alike: bytes, or a size such as '512MB' or '2GiB' (units are powers
        /// of 1024). Unset: each executor keeps the limit it was started with.
        pub executor_memory: Option<String>, default = None
        /// When an executor is lost mid-query, run again only the tasks whose outputs
        /// went with it and the tasks that had read part of those (lineage recovery).
        /// This keeps every stage's outputs in executor memory until the query ends
        /// (there is no backpressure between stages then). `false`: stages stream into
        /// each other and free what was read, and the whole query runs again instead.
        pub stage_recovery: bool, default = true
        /// Result bytes the coordinator holds back before it returns the first row, so
        /// a query that loses an executor can restart its final stage unseen by the
        /// caller. Past this size rows stream as they come, and a loss that needs the
        /// final stage to run again fails the query. '0' streams at once.
        pub result_buffer: String, default = "32MiB".to_string()
        /// Where Flight SQL clients read query results. 'coordinator': the coordinator
        /// streams them (every client can, and a lost executor is recovered unseen up
        /// to `result_buffer`). 'executors': the result's endpoint names the executor
        /// running the final stage, so rows skip the coordinator; the coordinator still
        /// redeems the same ticket for clients that ignore locations, but the loss of
        /// that executor fails the query.
        pub result_endpoints: String, default = "coordinator".to_string()
    }
}

impl FletchOptions {
    /// Whether `result_endpoints` sends clients to the executors; `Err` names a value
    /// that is neither place.
    pub fn results_from_executors(&self) -> Result<bool> {
        match self.result_endpoints.trim().to_ascii_lowercase().as_str() {
            "coordinator" => Ok(false),
            "executors" => Ok(true),
            other => Err(DataFusionError::Configuration(format!(
                "invalid fletch.result_endpoints {other:?}: expected 'coordinator' or 'executors'"
            ))),
        }
    }
}

impl ConfigExtension for FletchOptions {
    const PREFIX: &'static str = "fletch";
}

/// Parses a size: plain bytes, or a number with a K, M, G or T unit (optionally
/// followed by `B` or `iB`), all powers of 1024.
pub fn parse_size(text: &str) -> Result<usize> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let invalid = || {
        DataFusionError::Configuration(format!(
            "invalid size {text:?}: expected bytes or a number with a unit, such as 512MB or 2GiB"
        ))
    };
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(invalid()),
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > usize::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1024").ok(), Some(1024));
        assert_eq!(parse_size("4K").ok(), Some(4096));
        assert_eq!(parse_size("512MB").ok(), Some(512 << 20));
        assert_eq!(parse_size(" 2 GiB ").ok(), Some(2 << 30));
        assert_eq!(parse_size("1.5g").ok(), Some(3 << 29));
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_input_named() {
        for bad in ["", "MB", "12XB", "-1", "1e400"] {
            let err = parse_size(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
