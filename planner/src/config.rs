//! Fletch's settings as a DataFusion config extension, so `SET fletch.<name> = ...`
//! works in SQL and the values travel with every task like DataFusion's own.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::common::{DataFusionError, Result};

/// Settings under the `fletch.` prefix. Every value is checked when it is set: a bad
/// one is refused with the setting's name and the accepted form, and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FletchOptions {
    /// Every executor's memory limit; `None` keeps what each was started with.
    pub executor_memory: Option<ByteSize>,
    /// Lineage recovery of a lost executor's outputs (else the query reruns).
    pub stage_recovery: bool,
    /// Result bytes held back so a final stage can restart unseen.
    pub result_buffer: ByteSize,
    /// Where Flight SQL clients read results.
    pub result_endpoints: ResultEndpoints,
    /// Which string and binary types Flight SQL results carry.
    pub client_string_type: ClientStringType,
    /// Whether a plan the executors cannot run runs whole on the coordinator (else it
    /// is refused with the reason).
    pub allow_local_fallback: bool,
    /// A join's build side estimated under this size is broadcast even where it could
    /// be shuffled to the probe side's fragments.
    pub small_build_side: ByteSize,
    /// Finished queries the coordinator keeps in `fletch.queries` and `fletch.tasks`.
    pub query_history: usize,
}

/// The most finished queries `fletch.query_history` may keep: each keeps its tasks'
/// reports, so the log's memory stays bounded whatever a session sets.
pub const MAX_QUERY_HISTORY: usize = 10_000;

impl Default for FletchOptions {
    fn default() -> Self {
        Self {
            executor_memory: None,
            stage_recovery: true,
            result_buffer: ByteSize(32 << 20),
            result_endpoints: ResultEndpoints::Coordinator,
            client_string_type: ClientStringType::Utf8,
            allow_local_fallback: true,
            small_build_side: ByteSize(1 << 20),
            query_history: 100,
        }
    }
}

impl FletchOptions {
    /// The `fletch.*` settings in `config`; the defaults when it has none (a session
    /// Fletch did not make). The one way code reads them.
    pub fn of(config: &ConfigOptions) -> Cow<'_, Self> {
        config
            .extensions
            .get::<Self>()
            .map_or_else(|| Cow::Owned(Self::default()), Cow::Borrowed)
    }

    /// Estimated rows under which a build side counts as small when its size in bytes
    /// is unknown: one row per 8 bytes of `small_build_side`, the ratio of DataFusion's
    /// own single-node limits (1 MiB, 128K rows).
    pub fn small_build_side_rows(&self) -> usize {
        self.small_build_side.0 / 8
    }
}

/// One of Fletch's settings: its name under `fletch.` and what it means (shown by
/// `SHOW fletch.<name> VERBOSE` and `information_schema.df_settings`).
pub struct Setting {
    pub name: &'static str,
    pub description: &'static str,
}

/// Every Fletch setting, in the order they are listed.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "executor_memory",
        description: "Memory limit of every executor, for table fragments, exchange buffers \
            and operators alike: bytes, or a size such as '512MB' or '2GiB' (units are powers \
            of 1024). Unset: each executor keeps the limit it was started with.",
    },
    Setting {
        name: "stage_recovery",
        description: "When an executor is lost mid-query, run again only the tasks whose \
            outputs went with it and the tasks that had read part of those (lineage \
            recovery). This keeps every stage's outputs in executor memory until the query \
            ends. 'false': stages stream into each other and free what was read, and the \
            whole query runs again instead.",
    },
    Setting {
        name: "result_buffer",
        description: "Result bytes the coordinator holds back before it returns the first \
            row, so a query that loses an executor can restart its final stage unseen by \
            the caller. Past this size rows stream as they come. '0' streams at once.",
    },
    Setting {
        name: "result_endpoints",
        description: "Where Flight SQL clients read query results. 'coordinator': the \
            coordinator streams them (a lost executor is recovered unseen up to \
            result_buffer). 'executors': the result's endpoint names the executor running \
            the final stage, so rows skip the coordinator, but the loss of that executor \
            fails the query.",
    },
    Setting {
        name: "client_string_type",
        description: "How Flight SQL results carry strings and binaries. 'utf8' (the \
            default): Utf8 and Binary, which every Arrow reader and driver can read. \
            'view': Utf8View and BinaryView as DataFusion makes them, without a cast, for \
            readers of Arrow 15 or later.",
    },
    Setting {
        name: "allow_local_fallback",
        description: "What happens to a query the executors cannot run, such as one \
            holding a node or function Fletch cannot send them. 'true' (the default): it \
            runs whole on the coordinator, the log warns with the reason and EXPLAIN shows \
            it as LocalPlanExec. 'false': it is refused with that reason. Catalog listings \
            (SHOW, information_schema) always run on the coordinator.",
    },
    Setting {
        name: "small_build_side",
        description: "When a join's probe side is a table fragmented on the join keys, a \
            build side estimated at this size or more (or, with no size estimate, at one \
            row per 8 bytes of it) is shuffled to those fragments, sent once; a smaller one \
            is broadcast whole to every task. Bytes or a size such as '1MiB' (the default).",
    },
    Setting {
        name: "query_history",
        description: "How many finished queries the coordinator keeps, with their tasks, in             fletch.queries and fletch.tasks (running queries are always there); the oldest             go first. From 0 to 10000; the default is 100. It applies to the whole cluster.",
    },
];

impl FletchOptions {
    /// Sets `fletch.<key>` from its text, or leaves everything as it was and says why.
    fn set_checked(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.to_ascii_lowercase();
        let invalid = |expected: &str| {
            DataFusionError::Configuration(format!(
                "invalid value '{value}' for fletch.{key}: expected {expected}"
            ))
        };
        match key.as_str() {
            "executor_memory" => {
                self.executor_memory = Some(value.parse().map_err(|_| invalid(ByteSize::EXPECTED))?)
            }
            "stage_recovery" => {
                self.stage_recovery = parse_bool(value).ok_or_else(|| invalid(BOOL_EXPECTED))?
            }
            "allow_local_fallback" => {
                self.allow_local_fallback =
                    parse_bool(value).ok_or_else(|| invalid(BOOL_EXPECTED))?
            }
            "small_build_side" => {
                self.small_build_side = value.parse().map_err(|_| invalid(ByteSize::EXPECTED))?
            }
            "result_buffer" => {
                self.result_buffer = value.parse().map_err(|_| invalid(ByteSize::EXPECTED))?
            }
            "result_endpoints" => {
                self.result_endpoints = value
                    .parse()
                    .map_err(|_| invalid("'coordinator' or 'executors'"))?
            }
            "client_string_type" => {
                self.client_string_type = value.parse().map_err(|_| invalid("'view' or 'utf8'"))?
            }
            "query_history" => {
                self.query_history = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n <= MAX_QUERY_HISTORY)
                    .ok_or_else(|| invalid("a number of queries from 0 to 10000"))?
            }
            _ => return Err(unknown_setting(&key)),
        }
        Ok(())
    }

    /// `RESET fletch.<key>`: back to its default. DataFusion resets only its own
    /// settings, so Fletch's statements call this.
    pub fn reset(&mut self, key: &str) -> Result<()> {
        let key = key.to_ascii_lowercase();
        let defaults = Self::default();
        match key.as_str() {
            "executor_memory" => self.executor_memory = defaults.executor_memory,
            "stage_recovery" => self.stage_recovery = defaults.stage_recovery,
            "result_buffer" => self.result_buffer = defaults.result_buffer,
            "result_endpoints" => self.result_endpoints = defaults.result_endpoints,
            "client_string_type" => self.client_string_type = defaults.client_string_type,
            "allow_local_fallback" => self.allow_local_fallback = defaults.allow_local_fallback,
            "small_build_side" => self.small_build_side = defaults.small_build_side,
            "query_history" => self.query_history = defaults.query_history,
            _ => return Err(unknown_setting(&key)),
        }
        Ok(())
    }

    fn value(&self, name: &str) -> Option<String> {
        match name {
            "executor_memory" => self.executor_memory.map(|s| s.to_string()),
            "stage_recovery" => Some(self.stage_recovery.to_string()),
            "result_buffer" => Some(self.result_buffer.to_string()),
            "result_endpoints" => Some(self.result_endpoints.to_string()),
            "client_string_type" => Some(self.client_string_type.to_string()),
            "allow_local_fallback" => Some(self.allow_local_fallback.to_string()),
            "small_build_side" => Some(self.small_build_side.to_string()),
            "query_history" => Some(self.query_history.to_string()),
            _ => None,
        }
    }
}

const BOOL_EXPECTED: &str = "'true' or 'false'";

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn unknown_setting(key: &str) -> DataFusionError {
    let names: Vec<String> = SETTINGS
        .iter()
        .map(|s| format!("fletch.{}", s.name))
        .collect();
    DataFusionError::Configuration(format!(
        "unknown setting fletch.{key}; Fletch's settings are {}",
        names.join(", ")
    ))
}

impl ExtensionOptions for FletchOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.set_checked(key, value)
    }

    /// Keys carry the `fletch.` prefix, as `information_schema.df_settings`, `SHOW`
    /// and a task's shipped settings name them.
    fn entries(&self) -> Vec<ConfigEntry> {
        SETTINGS
            .iter()
            .map(|setting| ConfigEntry {
                key: format!("{}.{}", Self::PREFIX, setting.name),
                value: self.value(setting.name),
                description: setting.description,
            })
            .collect()
    }
}

impl ConfigExtension for FletchOptions {
    const PREFIX: &'static str = "fletch";
}

/// A number of bytes, written as bytes or with a binary unit (`512MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub usize);

impl ByteSize {
    const EXPECTED: &'static str = "bytes or a size such as '512MB' or '2GiB'";
}

impl std::str::FromStr for ByteSize {
    type Err = DataFusionError;

    fn from_str(text: &str) -> Result<Self> {
        parse_size(text).map(ByteSize)
    }
}

/// The largest binary unit that divides the size exactly, so the text parses back
/// to the same number.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(usize, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (unit, name) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{name}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Where Flight SQL clients read query results (`fletch.result_endpoints`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultEndpoints {
    /// The coordinator streams them; a lost executor is recovered unseen.
    Coordinator,
    /// The result's endpoint names the executor running the final stage.
    Executors,
}

/// How Flight SQL results carry strings and binaries (`fletch.client_string_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStringType {
    /// `Utf8View` and `BinaryView`, as DataFusion makes them.
    View,
    /// `Utf8` and `Binary`, readable by every Arrow reader.
    Utf8,
}

/// Text forms of an enum setting: each variant and its one spelling.
macro_rules! named_values {
    ($type:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl std::str::FromStr for $type {
            type Err = ();

            fn from_str(text: &str) -> std::result::Result<Self, ()> {
                match text.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok(Self::$variant),)*
                    _ => Err(()),
                }
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $name,)*
                })
            }
        }
    };
}

named_values!(ResultEndpoints { Coordinator => "coordinator", Executors => "executors" });
named_values!(ClientStringType { View => "view", Utf8 => "utf8" });

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
    use datafusion::common::config::{ConfigExtension, ExtensionOptions};

    use super::{ByteSize, FletchOptions, parse_size};

    #[test]
    fn a_bad_value_is_refused_by_name_and_nothing_changes() {
        let mut options = FletchOptions::default();
        for (key, bad) in [
            ("executor_memory", "lots"),
            ("result_buffer", "x"),
            ("result_endpoints", "bogus"),
            ("stage_recovery", "maybe"),
            ("client_string_type", "latin1"),
            ("allow_local_fallback", "sometimes"),
            ("small_build_side", "tiny"),
        ] {
            let err = options.set(key, bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("fletch.{key}")), "{err}");
            assert!(err.contains(&format!("'{bad}'")), "{err}");
            assert!(err.contains("expected"), "{err}");
        }
        assert_eq!(options, FletchOptions::default());
        let err = options.set("no_such_thing", "1").expect_err("unknown");
        assert!(err.to_string().contains("fletch.result_buffer"), "{err}");
    }

    #[test]
    fn every_value_shown_parses_back_to_itself() {
        let mut options = FletchOptions::default();
        options.set("executor_memory", "1.5GiB").expect("a size");
        options.set("result_buffer", "1000").expect("bytes");
        options
            .set("result_endpoints", " Executors ")
            .expect("an endpoint");
        options
            .set("client_string_type", "UTF8")
            .expect("a string type");
        options.set("stage_recovery", "FALSE").expect("a bool");
        options
            .set("allow_local_fallback", "false")
            .expect("a bool");
        options.set("small_build_side", "4MiB").expect("a size");
        let mut reparsed = FletchOptions::default();
        for entry in options.entries() {
            let key = entry.key.strip_prefix("fletch.").expect("prefixed");
            let value = entry.value.expect("every setting is set");
            reparsed.set(key, &value).expect("shown values parse");
        }
        assert_eq!(reparsed, options);
        assert_eq!(options.executor_memory, Some(ByteSize(3 << 29)));
        assert_eq!(ByteSize(3 << 29).to_string(), "1536MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn reset_restores_the_default_and_settings_list_with_their_prefix() {
        let mut options = FletchOptions::default();
        options.set("executor_memory", "1GiB").expect("a size");
        options.reset("executor_memory").expect("known");
        assert_eq!(options, FletchOptions::default());
        assert!(options.reset("nope").is_err());
        let keys: Vec<String> = options.entries().into_iter().map(|e| e.key).collect();
        assert!(
            keys.iter()
                .all(|k| k.starts_with(&format!("{}.", FletchOptions::PREFIX)))
        );
        assert!(keys.contains(&"fletch.client_string_type".to_string()));
    }

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
