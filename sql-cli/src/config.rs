//! `--config FILE`: settings from a TOML file, below environment variables and flags.
//!
//! Keys are the long flag names with `_` for `-` (`executors = 3`, `memory = "4GiB"`);
//! a table named after a subcommand holds that subcommand's (`[executor]`,
//! `slots = 4`). The file's values become the flags' defaults, so clap's own order
//! applies: defaults < file < `FLETCH_*` environment < flags. An unknown key is an
//! error naming it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Command;

/// The path given with `--config FILE` / `--config=FILE`, or `FLETCH_CONFIG`.
pub fn config_path(args: &[std::ffi::OsString]) -> Option<std::path::PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(Into::into);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    std::env::var_os("FLETCH_CONFIG").map(Into::into)
}

/// `command` with the file's values as defaults of the matching arguments.
pub fn apply(command: Command, path: &Path) -> Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing the config file {}", path.display()))?;
    apply_table(command, &table, &path.display().to_string())
}

fn apply_table(mut command: Command, table: &toml::Table, file: &str) -> Result<Command> {
    for (key, value) in table {
        if let toml::Value::Table(inner) = value {
            if command.find_subcommand(key).is_none() {
                bail!("{file}: no subcommand [{key}]");
            }
            let mut result = Ok(());
            command =
                command.mut_subcommand(key, |sub| match apply_table(sub.clone(), inner, file) {
                    Ok(sub) => sub,
                    Err(e) => {
                        result = Err(e);
                        sub
                    }
                });
            result?;
            continue;
        }
        let Some(arg) = command.get_arguments().find(|a| a.get_id() == key.as_str()) else {
            bail!(
                "{file}: unknown setting {key:?} for `{}`",
                command.get_name()
            );
        };
        let id = arg.get_id().clone();
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!("{file}: {key} must be a string, number or boolean, not {other}"),
        };
        // A process reads its configuration once; the defaults live as long as it does.
        let value: &'static str = Box::leak(value.into_boxed_str());
        command = command.mut_arg(id, |a| a.default_value(value).required(false));
    }
    Ok(command)
}
