//! The README's example session is what the binary prints: the statements in its
//! `fletch> ` lines are typed into the shell under a pseudo-terminal, and the screen
//! must match the README's text once what differs between runs (times, ports, the
//! data directory, sizes) is masked. `FLETCH_BLESS=1` writes the new session into the
//! README instead.

use std::process::Command;

use rexpect::reader::Options;
use rexpect::session::spawn_with_options;

const START: &str = "```text\n$ cargo run --release -p fletch-cli -- --tpch 0.1\n";

/// The example block: from its command line to its closing fence.
fn example(readme: &str) -> (usize, usize) {
    let start = readme.find(START).expect("the README's example session") + START.len();
    let end = start + readme[start..].find("```\n").expect("the example's end");
    (start, end)
}

/// Output as a terminal shows it: UTF-8 again (the pty reader hands over bytes as
/// chars), without escape sequences, each line as left after its last carriage
/// return (the progress line redraws itself and is cleared), no trailing blanks.
fn screen(raw: &str) -> String {
    let bytes: Vec<u8> = raw.chars().map(|c| c as u32 as u8).collect();
    let text = String::from_utf8_lossy(&bytes);
    let text = regex_replace(&text, "\x1b\\[[0-9;?]*[A-Za-z]", "");
    text.split('\n')
        .map(|line| {
            line.rsplit('\r')
                .find(|part| !part.trim().is_empty())
                .unwrap_or("")
                .trim_end()
        })
        .filter(|line| !line.is_empty() && *line != "fletch>")
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Masks what differs between runs.
fn masked(text: &str, data_dir: &str) -> String {
    let text = text.replace(data_dir, "~/.cache/fletch");
    let patterns = [
        (r"127\.0\.0\.1:[0-9]+", "127.0.0.1:PORT"),
        (r"in [0-9]+\.[0-9]+ s", "in T s"),
        (r"[0-9]+(\.[0-9])? (B|KiB|MiB|GiB)", "SIZE"),
    ];
    let mut text = text;
    for (pattern, with) in patterns {
        text = regex_replace(&text, pattern, with);
    }
    text
}

fn regex_replace(text: &str, pattern: &str, with: &str) -> String {
    let re = regex::Regex::new(pattern).expect("a pattern");
    re.replace_all(text, with).into_owned()
}

#[test]
fn the_readme_example_session_is_what_the_shell_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("read the README");
    let (start, end) = example(&readme);
    let documented = &readme[start..end];
    let statements: Vec<&str> = documented
        .lines()
        .filter_map(|line| line.strip_prefix("fletch> "))
        .collect();
    assert!(statements.len() >= 3, "{documented}");

    let data = std::env::temp_dir().join("fletch-readme-data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fletch"));
    command
        .args(["--tpch", "0.1", "--executors", "2"])
        .env("FLETCH_DATA_DIR", &data)
        .env("TERM", "xterm")
        .env("COLUMNS", "200")
        .env("LINES", "200")
        .env_remove("FLETCH_LOG");
    // Escape sequences are kept: rustyline turns bracketed paste on when it starts
    // reading a line and off when the line is read, which marks each statement's
    // output exactly (its prompt is redrawn, so the prompt text cannot).
    let options = Options {
        timeout_ms: Some(300_000),
        strip_ansi_escape_codes: false,
    };
    const READING: &str = "\x1b[?2004h";
    const READ: &str = "\x1b[?2004l";
    let mut session = spawn_with_options(command, options).expect("spawn the shell");
    let mut printed = screen(&session.exp_string(READING).expect("the first prompt"));
    for statement in &statements {
        session.send_line(statement).expect("type a statement");
        session.exp_string(READ).expect("the statement read");
        printed.push_str(&format!("fletch> {statement}\n"));
        let output = if *statement == "\\q" {
            session.exp_eof().expect("the shell ends")
        } else {
            session.exp_string(READING).expect("the next prompt")
        };
        printed.push_str(&screen(&output));
    }
    let data = data.display().to_string();
    if std::env::var_os("FLETCH_BLESS").is_some() {
        let printed = printed.replace(&data, "~/.cache/fletch");
        let updated = format!("{}{printed}{}", &readme[..start], &readme[end..]);
        std::fs::write(path, updated).expect("write the README");
        return;
    }
    assert_eq!(
        masked(&printed, &data),
        masked(documented, &data),
        "the README's example session differs from what the shell prints \
         (FLETCH_BLESS=1 cargo test -p fletch-cli --test readme writes it)"
    );
}
