//! The griddav command line.

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use griddav::config::Config;
use griddav::engine::{Downloader, FileCap, Uploader};
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
    #[command(subcommand)]
    command: Command,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("griddav: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
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
        // Answered above, before any configuration is loaded.
        Command::TahoeNurl { .. } => {}
        Command::Put { file, to } => put(&config, grid, &file, to.as_deref()).await?,
        Command::Cap { path } => return print_cap(&config, &path).await,
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
            let downloader = std::sync::Arc::new(Downloader::open(&grid, &cap).await?);
            let mut stream = std::pin::pin!(downloader.stream(0));
            let mut out = tokio::io::stdout();
            while let Some(piece) = stream.next().await {
                out.write_all(&piece?).await?;
            }
            out.flush().await?;
        }
        Command::Verify { cap } => {
            let cap = capability(cap).await?;
            let downloader = Downloader::open(&grid, &cap).await?;
            let problems = downloader.verify_all_shares().await;
            if problems.is_empty() {
                println!("all {} shares are intact", cap.n);
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
    let mut uploader = Uploader::new(
        grid,
        config.encoding_params(),
        griddav::server::upload_options(config),
        None,
    )
    .await?;
    let journal = match &namespace {
        Some(ns) => Some(ns.begin_upload(&uploader.recovery_token()).await?),
        None => None,
    };
    let mut buffer = vec![0u8; 256 << 10];
    let mut size: u64 = 0;
    loop {
        let n = input.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        size = size.saturating_add(n as u64);
        uploader.write(Bytes::copy_from_slice(&buffer[..n])).await?;
    }
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
async fn capability(arg: Option<String>) -> Result<FileCap, Box<dyn std::error::Error>> {
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
    Ok(text.parse()?)
}

async fn serve(config: Config, grid: Grid) -> Result<(), Box<dyn std::error::Error>> {
    let service = griddav::server::start_service(&config, grid).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "griddav listening on http://{addr}/")?;
        stdout.flush()?;
    }
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving WebDAV");
    griddav::server::serve_with_limits(
        listener,
        service.handler,
        griddav::http::listener::Limits::from(&config.http),
        service.uploads,
        shutdown_signal(),
    )
    .await?;
    service.collector.abort();
    if let Some(repairer) = service.repairer {
        repairer.abort();
    }
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
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
