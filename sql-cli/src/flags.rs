//! Which options apply to which command. Options shared by several commands are
//! global, so they are accepted before or after the subcommand; each command's
//! `--help` lists only the ones it uses, and one it does not use is refused by name
//! instead of being ignored.

use anyhow::{Result, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// The shell (no subcommand) is called this here.
const SHELL: &str = "shell";

/// The commands each shared option applies to; options not listed apply wherever
/// they are defined.
const APPLIES: &[(&str, &[&str])] = &[
    ("executors", &[SHELL, "serve", "bench"]),
    ("memory", &[SHELL, "serve", "executor", "bench"]),
    ("data_dir", &[SHELL, "bench"]),
    ("user", &[SHELL, "serve", "coordinator"]),
    ("password", &[SHELL, "serve", "coordinator"]),
    ("users", &["serve", "coordinator"]),
    ("cluster_secret_file", &["coordinator", "executor"]),
    ("cluster_secret", &["coordinator", "executor"]),
    ("allow_locations", &["serve", "coordinator"]),
    ("max_queries_per_user", &["serve", "coordinator"]),
    ("max_request_size", &["serve", "coordinator"]),
    ("max_task_partitions", &["executor"]),
    ("tls_cert", &["serve", "coordinator", "executor"]),
    ("tls_key", &["serve", "coordinator", "executor"]),
    ("tls_ca", &[SHELL, "coordinator", "executor"]),
    ("session_idle_secs", &["serve", "coordinator"]),
    ("metrics_listen", &["serve", "coordinator", "executor"]),
];

/// Options never listed in help (set through the environment).
const ALWAYS_HIDDEN: &[&str] = &["cluster_secret"];

fn applies(id: &str, command: &str) -> bool {
    APPLIES
        .iter()
        .find(|(option, _)| *option == id)
        .is_none_or(|(_, commands)| commands.contains(&command))
}

/// `command` with each command's help showing only the options it uses.
pub fn scope(mut command: Command) -> Command {
    // Builds the command, which copies global options into the subcommands.
    command.build();
    let hide = |command_name: &'static str| {
        move |arg: clap::Arg| {
            let id = arg.get_id().as_str().to_string();
            if ALWAYS_HIDDEN.contains(&id.as_str()) {
                arg.hide(true)
            } else if APPLIES.iter().any(|(option, _)| *option == id) {
                arg.hide(!applies(&id, command_name))
            } else {
                arg
            }
        }
    };
    let names: Vec<&'static str> = command
        .get_subcommands()
        .map(|s| &*Box::leak(s.get_name().to_string().into_boxed_str()))
        .collect();
    command = command.mut_args(hide(SHELL));
    for name in names {
        command = command.mut_subcommand(name, |sub| scope_within(sub, name, &hide));
    }
    command
}

/// `sub` and its own subcommands (`bench tpch`) with the options of `name` shown.
fn scope_within<F, H>(sub: Command, name: &'static str, hide: &H) -> Command
where
    H: Fn(&'static str) -> F,
    F: FnMut(clap::Arg) -> clap::Arg,
{
    let children: Vec<String> = sub
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut sub = sub.mut_args(hide(name));
    for child in children {
        sub = sub.mut_subcommand(&child, |c| scope_within(c, name, hide));
    }
    sub
}

/// Refuses an option given on the command line to a command it does not apply to.
pub fn check(command: &Command, matches: &ArgMatches) -> Result<()> {
    let name = matches.subcommand_name().unwrap_or(SHELL);
    let sub = matches.subcommand().map(|(_, sub)| sub);
    for (id, _) in APPLIES {
        let given = |m: &ArgMatches| {
            m.try_get_raw(id).is_ok() && m.value_source(id) == Some(ValueSource::CommandLine)
        };
        if !(given(matches) || sub.is_some_and(given)) || applies(id, name) {
            continue;
        }
        let flag = command
            .get_arguments()
            .find(|a| a.get_id() == *id)
            .and_then(|a| a.get_long())
            .unwrap_or(id);
        if name == SHELL {
            bail!("--{flag} does not apply to the shell; `fletch --help` lists what does");
        }
        bail!("--{flag} does not apply to `fletch {name}`; `fletch {name} --help` lists what does");
    }
    Ok(())
}
