//! `fletch`, the one binary: it owns the command line (flags with environment and
//! config-file fallbacks), the SQL shell on an embedded cluster or `--connect`ed to a
//! coordinator, the one-shot `-c` / `-f` modes, and the `serve`, `coordinator`,
//! `executor`, `bench` and `hash-password` subcommands. Engine logic lives in the
//! engine; this crate only wires it to a terminal and to processes.

mod bench;
mod cluster;
mod complete;
mod config;
mod exec;
mod flags;
mod meta;
mod output;
mod shell;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use fletch_engine::{
    ClusterSecret, ClusterSecurity, Credentials, DEFAULT_EXECUTORS, EndpointOptions, LocalCluster,
    Locations, MembershipOptions, TlsIdentity, Users,
};
use fletch_tpch as tpch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Fletch: distributed SQL on Apache DataFusion and Arrow Flight.
///
/// With no -c or -f, opens an interactive shell on an embedded cluster of executors,
/// each a Flight server on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "fletch", version)]
pub struct Args {
    /// Settings from a TOML file (keys are flag names; `[executor]` and `[coordinator]`
    /// tables for those subcommands), below FLETCH_* variables and flags.
    #[arg(long, env = "FLETCH_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Run statements on the coordinator at this URL (Flight SQL) instead of an
    /// embedded cluster.
    #[arg(long, env = "FLETCH_CONNECT", value_name = "URL")]
    connect: Option<String>,

    /// `serve`, `coordinator` and `executor`: serve Prometheus metrics over HTTP at
    /// `/metrics` on this address (port 0: any free port; the address bound is printed
    /// as `metrics on http://ADDR/metrics`). Off unless given.
    #[arg(
        long,
        env = "FLETCH_METRICS_LISTEN",
        value_name = "ADDR",
        global = true
    )]
    metrics_listen: Option<SocketAddr>,

    /// How log lines are written: `text` for people, `json` (one object a line, with
    /// the spans' fields: query id, stage, task, executor) for machines.
    #[arg(long, env = "FLETCH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Executors in the embedded cluster.
    #[arg(long, env = "FLETCH_EXECUTORS", default_value_t = DEFAULT_EXECUTORS, global = true)]
    executors: usize,

    /// User name: `serve` and `coordinator` admit this one user, as an admin (with
    /// --password; see --users for more); `--connect` signs in as it.
    #[arg(long, env = "FLETCH_USER", global = true)]
    user: Option<String>,

    /// Password that goes with --user.
    #[arg(long, env = "FLETCH_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,

    /// `serve` and `coordinator`: the users who may sign in, a TOML file of
    /// `[[user]]` entries with `name`, `password_hash` (`fletch hash-password`) and
    /// `role` (admin, writer or reader).
    #[arg(long, env = "FLETCH_USERS", value_name = "FILE", global = true)]
    users: Option<PathBuf>,

    /// `coordinator` and `executor`: a file holding the secret the cluster's members
    /// share (at least 16 bytes). Only members may run tasks, move table data or join;
    /// signed-in users never are. Without one, a process listens on loopback only.
    #[arg(
        long,
        env = "FLETCH_CLUSTER_SECRET_FILE",
        value_name = "FILE",
        global = true
    )]
    cluster_secret_file: Option<PathBuf>,

    /// The cluster secret itself; meant for the FLETCH_CLUSTER_SECRET variable, since
    /// a flag's value shows in the process list.
    #[arg(
        long,
        env = "FLETCH_CLUSTER_SECRET",
        global = true,
        hide = true,
        hide_env_values = true
    )]
    cluster_secret: Option<String>,

    /// `serve` and `coordinator`: a directory under which statements from clients may
    /// read and write files (CREATE EXTERNAL TABLE, COPY TO); repeatable. Default:
    /// none. Symlinks and `..` are resolved before the check.
    #[arg(
        long = "allow-location",
        env = "FLETCH_ALLOW_LOCATION",
        value_name = "DIR",
        value_delimiter = ',',
        global = true
    )]
    allow_locations: Vec<PathBuf>,

    /// `serve` and `coordinator`: statements one user may run at once (planning,
    /// streaming or serving results); more are refused until one finishes.
    #[arg(
        long,
        env = "FLETCH_MAX_QUERIES_PER_USER",
        default_value_t = 16,
        global = true
    )]
    max_queries_per_user: usize,

    /// `serve` and `coordinator`: the largest request message a client may send, and
    /// the most parameter data one prepared statement may be sent, e.g. 16MiB.
    #[arg(
        long,
        env = "FLETCH_MAX_REQUEST_SIZE",
        value_name = "SIZE",
        default_value = "16MiB",
        value_parser = parse_memory,
        global = true
    )]
    max_request_size: usize,

    /// `executor`: the most partitions any operator of a task's plan, or tasks of a
    /// stage, may have; a plan asking for more is refused before anything is allocated.
    #[arg(
        long,
        env = "FLETCH_MAX_TASK_PARTITIONS",
        default_value_t = 65536,
        global = true
    )]
    max_task_partitions: usize,

    /// `serve`, `coordinator` and `executor`: serve over TLS with this PEM certificate
    /// chain (with --tls-key).
    #[arg(long, env = "FLETCH_TLS_CERT", value_name = "FILE", global = true)]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FLETCH_TLS_KEY", value_name = "FILE", global = true)]
    tls_key: Option<PathBuf>,

    /// Trust this PEM certificate (a CA, or a shared self-signed one) for `https://`:
    /// `--connect`, and the links between coordinator and executors.
    #[arg(long, env = "FLETCH_TLS_CA", value_name = "FILE", global = true)]
    tls_ca: Option<PathBuf>,

    /// `serve` and `coordinator`: seconds a client's session token may go unused before
    /// it expires (the client then hand-shakes again).
    #[arg(
        long,
        env = "FLETCH_SESSION_IDLE_SECS",
        default_value_t = 3600,
        global = true
    )]
    session_idle_secs: u64,

    /// Memory limit of each executor (table fragments, exchange buffers, operators),
    /// e.g. 4GiB. Default: three quarters of the machine's memory, shared.
    #[arg(
        long,
        env = "FLETCH_MEMORY",
        value_name = "SIZE",
        value_parser = parse_memory,
        global = true
    )]
    memory: Option<usize>,

    /// Generate TPC-H at this scale factor (once, cached) and register its eight tables.
    #[arg(long, value_name = "SF")]
    tpch: Option<f64>,

    /// Where generated data and the shell history live.
    #[arg(long, env = "FLETCH_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Run these SQL statements (`;`-separated) and exit.
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,

    /// Run the SQL statements in these files and exit.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,

    /// How results are printed on stdout.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// No banners or timings on stderr.
    #[arg(short, long)]
    quiet: bool,

    /// Rows the table format shows at most; 0 shows all. Default: 40 in the
    /// interactive shell, all with -c or -f.
    #[arg(long, value_name = "N")]
    maxrows: Option<usize>,

    /// Stop at the first statement that fails (the exit status says it failed).
    #[arg(long)]
    bail: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve Arrow Flight SQL on an embedded cluster (`--executors` of them, `--memory`
    /// shared), for Python ADBC, JDBC or `fletch --connect`. Prints `listening on URL`
    /// on stdout, then runs until SIGTERM or Ctrl-C.
    Serve {
        /// Address to serve Flight SQL on (port 0: any free port).
        #[arg(long, env = "FLETCH_LISTEN", default_value = "127.0.0.1:50050")]
        listen: SocketAddr,
    },
    /// Run a coordinator that executors join (`fletch executor --coordinator URL`).
    /// Prints `listening on URL` on stdout, then runs until SIGTERM or Ctrl-C.
    Coordinator {
        /// Address to serve Flight on (port 0: any free port).
        #[arg(long, env = "FLETCH_LISTEN", default_value = "127.0.0.1:50050")]
        listen: SocketAddr,
        #[command(flatten)]
        heartbeats: HeartbeatArgs,
    },
    /// Run an executor that joins a coordinator. Prints `listening on URL` on stdout,
    /// then runs until SIGTERM or Ctrl-C, when it leaves the cluster.
    Executor {
        /// The coordinator's URL, e.g. http://127.0.0.1:50050.
        #[arg(long, env = "FLETCH_COORDINATOR")]
        coordinator: String,
        /// Address to serve Flight on (port 0: any free port).
        #[arg(long, env = "FLETCH_LISTEN", default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Tasks this executor runs at once (default: its cores).
        #[arg(long, env = "FLETCH_SLOTS")]
        slots: Option<usize>,
        /// On SIGTERM, seconds the queries running here get to finish before the
        /// executor stops anyway (their lost tasks then run again elsewhere).
        #[arg(long, env = "FLETCH_DRAIN_SECS", default_value_t = 30)]
        drain_secs: u64,
        #[command(flatten)]
        heartbeats: HeartbeatArgs,
    },
    /// Print the Argon2 hash of a password read from standard input, for a `--users`
    /// file's `password_hash`.
    HashPassword,
    /// Time queries on single-node DataFusion and on the embedded cluster, side by side.
    Bench {
        #[command(subcommand)]
        suite: BenchSuite,
    },
}

#[derive(Debug, clap::Args)]
struct HeartbeatArgs {
    /// Milliseconds between an executor's heartbeats.
    #[arg(long, env = "FLETCH_HEARTBEAT_MS", default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Missed heartbeats after which the coordinator declares an executor lost.
    #[arg(long, env = "FLETCH_LOST_AFTER", default_value_t = 3)]
    lost_after: u32,
}

impl HeartbeatArgs {
    fn options(&self) -> MembershipOptions {
        MembershipOptions {
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms.max(1)),
            lost_after: self.lost_after.max(1),
        }
    }
}

#[derive(Debug, Subcommand)]
enum BenchSuite {
    /// TPC-H: generates (or reuses) the data, prints CSV of median seconds and ratios;
    /// fails if any answer differs from single-node DataFusion's.
    Tpch {
        /// Scale factor.
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Comma-separated query numbers (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Runs of each query on each engine; the median is reported.
        #[arg(long, default_value_t = 3)]
        iterations: usize,
        /// Also write the figures, versions, git revision, cores and settings as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Cache the tables in the cluster's memory first (hash-fragmented on their
        /// keys) and compare with DataFusion over in-memory tables and over the files.
        #[arg(long)]
        cached: bool,
        /// A setting of Fletch's session, as `SET KEY = 'VALUE'` would make it
        /// (e.g. `--set fletch.stage_recovery=false`); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people (sizes readable, rows limited by --maxrows).
    Table,
    /// CSV with a header, also for no rows; a blank line between statements.
    Csv,
    /// Tab-separated, like csv.
    Tsv,
    /// One JSON array per statement, on its own line; NULLs as null.
    Json,
    /// One JSON object per row.
    Ndjson,
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", exec::tidy(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// How `serve` and `coordinator` admit clients.
fn endpoint_options(args: &Args) -> Result<EndpointOptions> {
    let users = match (&args.users, credentials(args)?) {
        (Some(_), Some(_)) => anyhow::bail!("--users and --user/--password exclude each other"),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the users file {}", path.display()))?;
            let users = Users::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("the users file {}: {e}", path.display()))?;
            Some(Arc::new(users))
        }
        (None, Some(credentials)) => Some(Arc::new(
            Users::single_admin(&credentials).map_err(|e| anyhow::anyhow!(e))?,
        )),
        (None, None) => None,
    };
    Ok(EndpointOptions {
        users,
        session_idle: Duration::from_secs(args.session_idle_secs),
        tls: tls_identity(args)?,
        locations: Locations::allow(&args.allow_locations).map_err(|e| anyhow::anyhow!(e))?,
        max_queries_per_user: args.max_queries_per_user,
        max_request_bytes: args.max_request_size,
        ..Default::default()
    })
}

/// `--tls-cert` and `--tls-key`, which go together.
fn tls_identity(args: &Args) -> Result<Option<TlsIdentity>> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
    };
    Ok(match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            cert_pem: read(cert, "TLS certificate")?,
            key_pem: read(key, "TLS key")?,
        }),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
    })
}

/// The cluster secret, from `--cluster-secret-file` or `FLETCH_CLUSTER_SECRET`.
fn cluster_secret(args: &Args) -> Result<Option<ClusterSecret>> {
    let text = match (&args.cluster_secret_file, &args.cluster_secret) {
        (Some(_), Some(_)) => {
            anyhow::bail!("give the cluster secret once: a file or FLETCH_CLUSTER_SECRET")
        }
        (Some(path), None) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the cluster secret {}", path.display()))?,
        (None, Some(secret)) => secret.clone(),
        (None, None) => return Ok(None),
    };
    ClusterSecret::new(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!(e))
}

/// What a cluster member presents and trusts: the cluster secret, and `--tls-ca` for
/// its `https://` links to executors and the coordinator.
fn cluster_security(args: &Args) -> Result<ClusterSecurity> {
    let mut security = ClusterSecurity::open().with_secret(cluster_secret(args)?);
    if let Some(ca) = &args.tls_ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("reading the TLS CA {}", ca.display()))?;
        security = security.trusting(pem);
    }
    Ok(security)
}

/// `--user` and `--password`, which go together.
fn credentials(args: &Args) -> Result<Option<Credentials>> {
    match (&args.user, &args.password) {
        (Some(user), Some(password)) => Ok(Some(Credentials {
            user: user.clone(),
            password: password.clone(),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => anyhow::bail!("--user needs --password (or FLETCH_PASSWORD)"),
        (None, Some(_)) => anyhow::bail!("--password needs --user (or FLETCH_USER)"),
    }
}

fn main_inner() -> Result<ExitCode> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Args::command();
    if let Some(path) = config::config_path(&argv) {
        command = config::apply(command, &path)?;
    }
    let command = flags::scope(command);
    let matches = command.clone().get_matches_from(argv);
    flags::check(&command, &matches)?;
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let log_file = init_logging(&args, &data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match &args.command {
        Some(Command::HashPassword) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!(
                "{}",
                fletch_engine::hash_password(password).map_err(|e| anyhow::anyhow!(e))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Serve { listen }) => {
            runtime.block_on(cluster::run_embedded_server(
                *listen,
                args.executors,
                args.memory,
                endpoint_options(&args)?,
                args.metrics_listen,
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Coordinator { listen, heartbeats }) => {
            runtime.block_on(cluster::run_coordinator(
                *listen,
                heartbeats.options(),
                cluster_security(&args)?,
                endpoint_options(&args)?,
                args.metrics_listen,
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Executor {
            coordinator,
            listen,
            slots,
            drain_secs,
            heartbeats,
        }) => {
            let slots = slots
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let mut options = fletch_executor::ExecutorOptions {
                tls: tls_identity(&args)?,
                security: cluster_security(&args)?,
                task_limits: fletch_executor::TaskLimits {
                    max_partitions: args.max_task_partitions,
                    ..Default::default()
                },
                ..Default::default()
            };
            if let Some(memory_limit) = args.memory {
                options.memory_limit = memory_limit;
            }
            let membership = cluster::Membership {
                coordinator,
                slots,
                heartbeat_interval: heartbeats.options().heartbeat_interval,
                drain: Duration::from_secs(*drain_secs),
                metrics_listen: args.metrics_listen,
            };
            runtime.block_on(cluster::run_executor(*listen, options, membership))?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if let Some(Command::Bench {
        suite:
            BenchSuite::Tpch {
                sf,
                queries,
                iterations,
                json,
                cached,
                settings,
            },
    }) = &args.command
    {
        let bench = bench::TpchBench {
            scale_factor: *sf,
            executors: args.executors,
            queries: if queries.is_empty() {
                (1..=22).collect()
            } else {
                queries.clone()
            },
            iterations: *iterations,
            json: json.clone(),
            cached: *cached,
            settings: settings.clone(),
        };
        runtime.block_on(bench.run(&data_dir))?;
        return Ok(ExitCode::SUCCESS);
    }
    let interactive = args.commands.is_empty() && args.files.is_empty();
    let max_rows = match args.maxrows {
        Some(0) => None,
        Some(n) => Some(n),
        None if interactive => Some(40),
        None => None,
    };
    let mut printer = output::Printer::new(args.format, args.quiet, max_rows);
    printer.pager = interactive;
    if let Some(url) = &args.connect {
        if args.tpch.is_some() {
            anyhow::bail!("--tpch registers tables in an embedded cluster; not with --connect");
        }
        let mut endpoint = tonic::transport::Channel::from_shared(url.clone())
            .with_context(|| format!("invalid coordinator URL {url}"))?;
        if url.starts_with("https://") {
            let Some(ca) = &args.tls_ca else {
                anyhow::bail!("--connect {url} needs --tls-ca FILE: the certificate to trust");
            };
            let ca = std::fs::read(ca)
                .with_context(|| format!("reading the TLS CA {}", ca.display()))?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
        }
        let channel = runtime.block_on(endpoint.connect()).with_context(|| {
            format!(
                "connecting to the coordinator at {url} (is `fletch serve` or `fletch \
                     coordinator` listening there?)"
            )
        })?;
        let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
        if let Some(credentials) = credentials(&args)? {
            runtime
                .block_on(client.handshake(&credentials.user, &credentials.password))
                .with_context(|| format!("signing in to {url} as {}", credentials.user))?;
        }
        if !args.quiet {
            eprintln!("Fletch {}: connected to {url}", env!("CARGO_PKG_VERSION"));
        }
        return run_statements(
            &runtime,
            &exec::Target::Remote(client),
            &args,
            &mut printer,
            &data_dir,
        );
    }
    let cluster = runtime
        .block_on(LocalCluster::start_with(args.executors, args.memory))
        .context("starting the embedded cluster")?;
    let ctx = cluster.session();
    if !args.quiet {
        eprintln!(
            "Fletch {}: embedded cluster with {} executors ({})",
            env!("CARGO_PKG_VERSION"),
            args.executors,
            cluster.executor_urls().join(", ")
        );
        if let Some(log) = &log_file {
            eprintln!("Log: {}", log.display());
        }
    }
    if let Some(sf) = args.tpch {
        let dir = tpch::data_dir(&data_dir, sf);
        if !args.quiet {
            eprintln!(
                "TPC-H SF{sf}: {} (generated once, then reused)",
                dir.display()
            );
        }
        tpch::generate(&dir, sf).context("generating TPC-H data")?;
        runtime
            .block_on(tpch::register(&ctx, &dir))
            .context("registering TPC-H tables")?;
    }
    let code = run_statements(
        &runtime,
        &exec::Target::Local(ctx),
        &args,
        &mut printer,
        &data_dir,
    );
    runtime.block_on(cluster.shutdown());
    code
}

/// The shell, or the `-c` / `-f` statements, against `target`.
fn run_statements(
    runtime: &tokio::runtime::Runtime,
    target: &exec::Target,
    args: &Args,
    printer: &mut output::Printer,
    data_dir: &std::path::Path,
) -> Result<ExitCode> {
    if args.commands.is_empty() && args.files.is_empty() {
        shell::run(runtime, target, printer, data_dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut ok = true;
    for sql in &args.commands {
        let end = runtime.block_on(exec::run_script(
            target,
            sql,
            exec::Source::Command,
            printer,
            args.bail,
        ));
        ok &= end.failed == 0;
        if end.failed > 0 && args.bail {
            return Ok(ExitCode::FAILURE);
        }
    }
    for file in &args.files {
        let sql =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let name = file.display().to_string();
        let end = runtime.block_on(exec::run_script(
            target,
            &sql,
            exec::Source::File(&name),
            printer,
            args.bail,
        ));
        ok &= end.failed == 0;
        if end.failed > 0 && args.bail {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Log lines go to stderr, at `FLETCH_LOG` (default warn); but an interactive shell
/// writes them to `fletch.log` in the data directory unless `FLETCH_LOG` asks for
/// them, so none lands on the prompt. Returns that file's path.
fn init_logging(args: &Args, data_dir: &std::path::Path) -> Option<PathBuf> {
    use std::io::IsTerminal;
    let asked = tracing_subscriber::EnvFilter::try_from_env("FLETCH_LOG").ok();
    let interactive = args.command.is_none()
        && args.commands.is_empty()
        && args.files.is_empty()
        && std::io::stdin().is_terminal();
    let filter = || {
        asked
            .clone()
            .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"))
    };
    let json = args.log_format == LogFormat::Json;
    if interactive && std::env::var_os("FLETCH_LOG").is_none() {
        let path = data_dir.join("fletch.log");
        let file = std::fs::create_dir_all(data_dir).and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        });
        if let Ok(file) = file {
            install_logging(filter(), false, std::sync::Mutex::new(file), json);
            return Some(path);
        }
    }
    install_logging(filter(), !json, std::io::stderr, json);
    None
}

fn install_logging<W>(filter: tracing_subscriber::EnvFilter, ansi: bool, writer: W, json: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}

fn parse_memory(text: &str) -> Result<usize, String> {
    fletch_planner::parse_size(text).map_err(|e| e.strip_backtrace())
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache")
        .join("fletch")
}
