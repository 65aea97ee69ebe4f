//! The griddav command line.

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use griddav::config::Config;
use griddav::engine::{Capability, FileReader, Uploader};
use griddav::grid::Grid;
use griddav::namespace::{Content, Namespace, NsPath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(
    version,
    about = "A WebDAV server that streams uploads, encrypted and erasure-coded, into a grid of storage servers"
)]
struct Cli {
    /// Configuration file (TOML); every key has a default, see config/griddav.toml.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory, overriding the configuration's `data_dir`
    /// (default ./griddav-data; the default grid is ten directories under `grid/`).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// How log lines are written to standard error: `text` for people,
    /// `json` (one object per line) for log shippers. `RUST_LOG` chooses
    /// what is logged (default `info`: one line per request and the
    /// server's events).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebDAV.
    Serve {
        /// Address to listen on, overriding the configuration's `listen`
        /// (default 127.0.0.1:4918; port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Upload a file (or standard input with `-`) and print its capability.
    Put {
        file: PathBuf,
        /// Also link the file into the WebDAV tree at this path (`/docs/a.pdf`),
        /// replacing a file there, so that it is listed, served and deleted
        /// like any other. Its folder must exist.
        #[arg(long, value_name = "PATH")]
        to: Option<String>,
    },
    /// Link an existing file into the WebDAV tree at PATH by its capability:
    /// a griddav capability, or a Tahoe-LAFS immutable file's `URI:CHK:...`
    /// (or `URI:LIT:...`) as `tahoe put` printed it, which is then served
    /// read-only-by-content and verified as Tahoe verifies it. The
    /// capability is read from standard input when it is `-` or not given
    /// (`griddav link /docs/a.pdf < cap.txt`). It must be readable (its
    /// shares found and verified) before the link is made; the folder must
    /// exist; a file at PATH is replaced. Over HTTP: `PUT PATH` with an empty
    /// body and the header `Griddav-Link: CAP` (docs/TAHOE.md).
    Link {
        /// `[CAP] PATH`.
        #[arg(num_args = 1..=2, value_names = ["CAP", "PATH"], required = true)]
        args: Vec<String>,
    },
    /// Print the capability of the file at PATH in the WebDAV tree
    /// (`/docs/a.pdf`), to `get` or `verify` it.
    Cap { path: String },
    /// Write the file of a capability to standard output. The capability
    /// is read from standard input when it is `-` or not given, so it need
    /// not appear in `ps` or the shell's history.
    Get { cap: Option<String> },
    /// Read every byte of every share of a capability and report problems
    /// (capability from standard input when `-` or not given).
    Verify { cap: Option<String> },
    /// Print the recovery key: the data directory's root secret in a form
    /// to write down. Keep it away from this machine: with it and the
    /// grid's configuration, `recover` rebuilds the namespace.
    RecoveryKey,
    /// Rebuild the data directory's namespace from the grid alone: the
    /// recovery key is asked for on the terminal (not echoed) or read as
    /// one line of standard input. Uses the servers of `--config`.
    Recover {
        /// Replace an existing namespace (it is renamed aside, not deleted).
        #[arg(long)]
        force: bool,
    },
    /// Check the files under PATH (default all): which servers hold their
    /// shares; with --deep, every byte verified; with --repair, missing or
    /// corrupt shares re-created. Safe while `serve` runs on the same data
    /// directory. Exit status 0 only if every file is healthy afterwards.
    Check {
        /// Read and verify every byte of every share.
        #[arg(long)]
        deep: bool,
        /// Re-create missing or corrupt shares from k good ones.
        #[arg(long)]
        repair: bool,
        /// One JSON document on standard output, for machines.
        #[arg(long)]
        json: bool,
        path: Option<String>,
    },
    /// Print the NURL of a Tahoe-LAFS node directory, for a
    /// `{ kind = "tahoe", nurl = "..." }` server (it holds a secret).
    TahoeNurl { nodedir: PathBuf },
    /// Read a password (from the terminal without echo, or one line of
    /// standard input) and print its argon2id hash for a [[users]] entry.
    Passwd,
    /// Print the status of a running `griddav serve`: its servers, uploads
    /// in progress and recent errors (from /status.json).
    Status {
        /// The status address (default: `metrics_listen` of the configuration).
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Coding, hashing and share I/O run on the blocking pool. Unbounded
        // (tokio's default is 512) it grew to a hundred threads, and glibc
        // keeps an arena of freed segment buffers per thread: one 1 GiB PUT
        // and GET peaked at 365 MiB resident, against 110 MiB with this bound
        // (and ran faster for less thread churn).
        .max_blocking_threads(8 * cores)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(e) => {
            eprintln!("griddav: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("griddav: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Command::Passwd = &cli.command {
        let phc = tokio::task::spawn_blocking(passwd).await??;
        println!("{phc}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::TahoeNurl { nodedir } = &cli.command {
        for nurl in griddav::grid::tahoe::nurls_of_node_dir(nodedir)? {
            println!("{nurl}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(data_dir) = cli.data_dir {
        config.data_dir = data_dir;
    }
    if let Command::Serve {
        listen: Some(listen),
    } = &cli.command
    {
        config.listen = *listen;
    }
    config.validate()?;
    if let Command::Status { url } = &cli.command {
        let status = griddav::metrics::fetch_status(url.as_deref(), config.metrics_listen).await?;
        print!("{}", griddav::metrics::text(&status));
        return Ok(ExitCode::SUCCESS);
    }
    let beside_server = matches!(cli.command, Command::Check { .. });
    let grid = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            if beside_server {
                griddav::server::build_grid_beside_server(&config)
            } else {
                griddav::server::build_grid(&config)
            }
        })
        .await??
    };
    match cli.command {
        Command::Serve { .. } => serve(config, grid).await?,
        Command::Recover { force } => {
            let key = tokio::task::spawn_blocking(read_recovery_key).await??;
            let secret = griddav::snapshot::RootSecret::parse(&key)?;
            // A spinner with the time taken: the steps (root records, the
            // copy's download and checks) have no byte count known ahead.
            let spinner = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}")
            {
                spinner.set_style(style);
            }
            spinner.set_message("reading root records and the newest namespace copy");
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let done = griddav::snapshot::recover::recover(
                &grid,
                &secret,
                &config.data_dir,
                &config.namespace_db(),
                force,
            )
            .await;
            spinner.finish_and_clear();
            let done = done?;
            for problem in &done.problems {
                eprintln!("griddav: warning: {problem}");
            }
            for path in &done.set_aside {
                println!("set aside: {}", path.display());
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            println!(
                "recovered namespace copy {} (taken {} s ago; root record {}, verified on {} \
                 servers; a base and {} increments, {} bytes) into {} in {:.2} s",
                done.copy_seq,
                now_ms.saturating_sub(done.taken_at_ms) / 1000,
                done.record_seq,
                done.records_verified,
                done.increments,
                done.bytes,
                config.namespace_db().display(),
                done.elapsed.as_secs_f64()
            );
        }
        Command::RecoveryKey => {
            let data_dir = config.data_dir.clone();
            let secret = tokio::task::spawn_blocking(move || {
                griddav::snapshot::RootSecret::load_or_create(&data_dir)
            })
            .await??;
            println!("{}", secret.to_words());
        }
        // Answered above, before any configuration is loaded.
        Command::TahoeNurl { .. } | Command::Passwd | Command::Status { .. } => {}
        Command::Put { file, to } => put(&config, grid, &file, to.as_deref()).await?,
        Command::Cap { path } => return print_cap(&config, &path).await,
        Command::Link { mut args } => {
            let path = args.pop().unwrap_or_default();
            let cap = capability_text(args.pop()).await?;
            let ns = Namespace::open(config.namespace_db()).await?;
            let linked = griddav::dav::link::link_capability(&ns, &grid, &path, &cap)
                .await
                .map_err(|e| format!("link {path}: {e}"))?;
            println!(
                "{} {path} ({} bytes)",
                if linked.created { "linked" } else { "replaced" },
                linked.node.size
            );
        }
        Command::Check {
            deep,
            repair,
            json,
            path,
        } => {
            let ns = Namespace::open_read_only(config.namespace_db()).await?;
            let options = griddav::engine::repair::CheckOptions {
                deep,
                repair,
                renew_leases: true,
            };
            let path = path.as_deref().unwrap_or("/");
            let healthy = griddav::repair::cli::run(&ns, &grid, path, options, json).await?;
            return Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Get { cap } => {
            let cap = capability(cap).await?;
            let downloader = std::sync::Arc::new(FileReader::open(&grid, &cap).await?);
            let bar = progress_bar(Some(cap.size()));
            let mut stream = std::pin::pin!(downloader.stream(0));
            let mut out = tokio::io::stdout();
            while let Some(piece) = stream.next().await {
                let piece = piece?;
                out.write_all(&piece).await?;
                bar.inc(piece.len() as u64);
            }
            out.flush().await?;
            bar.finish_and_clear();
        }
        Command::Verify { cap } => {
            let cap = capability(cap).await?;
            let downloader = FileReader::open(&grid, &cap).await?;
            let bar = progress_bar(Some(cap.size()));
            let problems = downloader
                .verify_all_shares_with_progress(|bytes| bar.inc(bytes))
                .await;
            bar.finish_and_clear();
            let n = match &cap {
                Capability::Griddav(cap) => cap.n,
                Capability::Chk(cap) => cap.n,
                Capability::Lit(_) => 0,
            };
            if n == 0 {
                println!("a literal file: its bytes are in the capability, no shares to verify");
            } else if problems.is_empty() {
                println!("all {n} shares are intact");
            } else {
                for problem in &problems {
                    println!("{problem}");
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar with rate and ETA on standard error (a byte counter
/// with its rate when the total is unknown). indicatif draws nothing when
/// standard error is not a terminal, so scripts and logs see no bars.
fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            indicatif::ProgressBar::new(total),
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{elapsed_precise} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// `griddav put`: uploads, prints the capability and, with `--to`, links
/// the file into the tree. The upload is journalled like a PUT's, so a
/// crash before the link leaves no shares behind once the server restarts.
async fn put(
    config: &Config,
    grid: Grid,
    file: &std::path::Path,
    to: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let namespace = match to {
        Some(path) => {
            let parent = NsPath::parse(path)?
                .parent()
                .ok_or("--to: the root is a folder, name a file in it")?;
            let ns = Namespace::open(config.namespace_db()).await?;
            // Refused before any byte is uploaded rather than after.
            if !ns
                .lookup(parent.as_str())
                .await?
                .is_some_and(|n| n.is_dir())
            {
                return Err(format!("--to {path}: no folder {parent}").into());
            }
            Some(ns)
        }
        None => None,
    };
    let mut input: Box<dyn tokio::io::AsyncRead + Unpin> = if file.as_os_str() == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(file).await?)
    };
    let grid_for_cleanup = grid.clone();
    let options = griddav::server::upload_options(config, &grid);
    let mut uploader = Uploader::new(grid, config.encoding_params(), options, None).await?;
    let journal = match &namespace {
        Some(ns) => Some(ns.begin_upload(&uploader.recovery_token()).await?),
        None => None,
    };
    let expected = if file.as_os_str() == "-" {
        None
    } else {
        tokio::fs::metadata(file).await.ok().map(|m| m.len())
    };
    let bar = progress_bar(expected);
    let mut buffer = vec![0u8; 256 << 10];
    let mut size: u64 = 0;
    loop {
        let n = input.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        size = size.saturating_add(n as u64);
        uploader.write(Bytes::copy_from_slice(&buffer[..n])).await?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let token = uploader.recovery_token();
    let cap = uploader.finish().await?;
    if let (Some(ns), Some(path)) = (&namespace, to) {
        let published = ns
            .publish_file(
                path,
                Content::Cap(cap.to_string()),
                size,
                std::time::SystemTime::now(),
                journal,
            )
            .await;
        if let Err(e) = published {
            // Nothing refers to the shares: free them now, not at the
            // server's next start.
            if griddav::engine::delete::delete_shares_of_token(&grid_for_cleanup, &token)
                .await
                .is_ok()
            {
                if let Some(journal) = journal {
                    let _ = ns.end_upload(journal).await;
                }
            }
            return Err(format!("--to {path}: {e}").into());
        }
    }
    println!("{cap}");
    Ok(())
}

/// The recovery key: from the terminal without echo, or the first line
/// (at most 1 KiB) of standard input. Blocking.
fn read_recovery_key() -> std::io::Result<String> {
    use std::io::{BufRead, IsTerminal, Read, Write};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        eprint!("recovery key: ");
        std::io::stderr().flush()?;
        let fd = stdin.as_fd();
        let saved = tcgetattr(fd).map_err(std::io::Error::from)?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(fd, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
        let read = stdin.lock().take(1024).read_line(&mut line);
        let restored = tcsetattr(fd, SetArg::TCSANOW, &saved);
        read?;
        restored.map_err(std::io::Error::from)?;
    } else {
        stdin.lock().take(1024).read_line(&mut line)?;
    }
    Ok(line.trim().to_owned())
}

/// `griddav cap PATH`: the capability the namespace holds for a file.
async fn print_cap(config: &Config, path: &str) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ns = Namespace::open(config.namespace_db()).await?;
    let Some(node) = ns.lookup(path).await? else {
        return Err(format!("{path}: no such file").into());
    };
    match node.content {
        Some(Content::Cap(cap)) => {
            println!("{cap}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Content::Inline(_)) => Err(format!(
            "{path}: a small file ({} bytes) kept in the namespace database, not in the \
             grid, so it has no capability (see inline_threshold)",
            node.size
        )
        .into()),
        None => Err(format!("{path}: a folder, not a file").into()),
    }
}

/// The capability given as an argument, or read from standard input (its
/// first line, at most 1 KiB) when the argument is `-` or missing.
async fn capability(arg: Option<String>) -> Result<Capability, Box<dyn std::error::Error>> {
    Ok(capability_text(arg).await?.parse()?)
}

/// [`capability`]'s text, unparsed.
async fn capability_text(arg: Option<String>) -> Result<String, Box<dyn std::error::Error>> {
    let text = match arg {
        Some(cap) if cap != "-" => cap,
        _ => {
            let mut input = Vec::new();
            tokio::io::stdin()
                .take(1024)
                .read_to_end(&mut input)
                .await?;
            let text = String::from_utf8(input).map_err(|_| "the capability is not UTF-8")?;
            text.lines().next().unwrap_or_default().trim().to_owned()
        }
    };
    Ok(text)
}

/// The password `griddav passwd` hashes, as a PHC string.
fn passwd() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::Read::take(std::io::stdin().lock(), 4096)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    griddav::auth::hash_password(&password)
}

async fn serve(config: Config, grid: Grid) -> Result<(), Box<dyn std::error::Error>> {
    // Before binding: nothing is ever served insecurely, not even briefly.
    config.check_exposure()?;
    let tls = griddav::http::tls::acceptor(&config)?;
    let service = griddav::server::start_service(&config, grid.clone()).await?;
    let sources = griddav::metrics::Sources {
        grid,
        uploads: std::sync::Arc::clone(&service.uploads),
        ns: service.ns.clone(),
        snapshots: service.snapshots.clone(),
    };
    let metrics = match config.metrics_listen {
        Some(at) => Some(griddav::metrics::start(at, sources).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "griddav listening on {scheme}://{addr}/")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving WebDAV");
    let limits = griddav::http::listener::Limits {
        shutdown_grace: config.shutdown_grace(),
        ..griddav::http::listener::Limits::from(&config.http)
    };
    griddav::server::serve_tls(
        listener,
        service.handler.clone(),
        limits,
        tls,
        std::sync::Arc::clone(&service.uploads),
        shutdown_signal(),
    )
    .await?;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    service.shut_down().await;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let which = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminate => "SIGTERM",
    };
    tracing::info!(signal = which, "shutting down");
}
