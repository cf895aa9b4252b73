//! `fletch`: the Fletch SQL shell on an embedded cluster, and one-shot `-c` / `-f` modes.

mod bench;
mod cluster;
mod config;
mod exec;
mod shell;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use fletch_engine::{
    Credentials, DEFAULT_EXECUTORS, EndpointOptions, LocalCluster, MembershipOptions, TlsIdentity,
    tpch,
};

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

    /// Executors in the embedded cluster.
    #[arg(long, env = "FLETCH_EXECUTORS", default_value_t = DEFAULT_EXECUTORS)]
    executors: usize,

    /// User name: what `serve` and `coordinator` require of clients (with --password),
    /// and what `executor` and `--connect` present.
    #[arg(long, env = "FLETCH_USER", global = true)]
    user: Option<String>,

    /// Password that goes with --user.
    #[arg(long, env = "FLETCH_PASSWORD", global = true, hide_env_values = true)]
    password: Option<String>,

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
    #[arg(long, env = "FLETCH_MEMORY", value_name = "SIZE", value_parser = parse_memory)]
    memory: Option<usize>,

    /// Generate TPC-H at this scale factor (once, cached) and register its eight tables.
    #[arg(long, value_name = "SF")]
    tpch: Option<f64>,

    /// Where generated data and the shell history live.
    #[arg(long, env = "FLETCH_DATA_DIR", value_name = "DIR")]
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

    #[command(subcommand)]
    command: Option<Command>,
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
        /// Executors in the embedded cluster (default: the top-level --executors).
        #[arg(long)]
        executors: Option<usize>,
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
    Table,
    Csv,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLETCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match main_inner() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How `serve` and `coordinator` admit clients.
fn endpoint_options(args: &Args) -> Result<EndpointOptions> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            cert_pem: read(cert, "TLS certificate")?,
            key_pem: read(key, "TLS key")?,
        }),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
    };
    Ok(EndpointOptions {
        credentials: credentials(args)?,
        session_idle: Duration::from_secs(args.session_idle_secs),
        tls,
    })
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
    let args = match Args::from_arg_matches(&command.get_matches_from(argv)) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    if let Some(ca) = &args.tls_ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("reading the TLS CA {}", ca.display()))?;
        // Links to https:// executors and coordinators trust it too.
        fletch_executor::trust_cluster_certificate(pem);
    }
    if let Some(credentials) = credentials(&args)? {
        // Links to executors present them, and executors started here require them.
        fletch_executor::use_cluster_credentials(credentials);
    }
    match &args.command {
        Some(Command::Serve { listen }) => {
            runtime.block_on(cluster::run_embedded_server(
                *listen,
                args.executors,
                args.memory,
                endpoint_options(&args)?,
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Coordinator { listen, heartbeats }) => {
            runtime.block_on(cluster::run_coordinator(
                *listen,
                heartbeats.options(),
                endpoint_options(&args)?,
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
                tls: endpoint_options(&args)?.tls,
                credentials: credentials(&args)?,
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
                authorization: credentials(&args)?.map(|c| c.basic_header()),
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
                executors,
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
            executors: executors.unwrap_or(args.executors),
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
    let printer = exec::Printer {
        format: args.format,
        quiet: args.quiet,
    };
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
        let channel = runtime
            .block_on(endpoint.connect())
            .with_context(|| format!("connecting to the coordinator at {url}"))?;
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
            &printer,
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
        &printer,
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
    printer: &exec::Printer,
    data_dir: &std::path::Path,
) -> Result<ExitCode> {
    if args.commands.is_empty() && args.files.is_empty() {
        shell::run(runtime, target, printer, data_dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut ok = true;
    for sql in &args.commands {
        ok &= runtime.block_on(exec::run_script(target, sql, printer));
    }
    for file in &args.files {
        let sql =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        ok &= runtime.block_on(exec::run_script(target, &sql, printer));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
