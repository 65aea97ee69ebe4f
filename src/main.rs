//! The griddav command line.

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use griddav::engine::{Downloader, EncodingParams, FileCap, UploadOptions, Uploader};
use griddav::grid::{grid_of_dirs, Grid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(
    version,
    about = "A WebDAV server that streams uploads, encrypted and erasure-coded, into a grid of storage servers"
)]
struct Cli {
    /// Data directory; its local grid is ten directories under `grid/`.
    #[arg(long, global = true, default_value = "./griddav-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload a file (or standard input with `-`) and print its capability.
    Put { file: PathBuf },
    /// Write the file of a capability to standard output.
    Get { cap: String },
    /// Read every byte of every share of a capability and report problems.
    Verify { cap: String },
}

const LOCAL_SERVERS: usize = 10;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
    let grid = Grid::new(grid_of_dirs(&cli.data_dir.join("grid"), LOCAL_SERVERS)?);
    match cli.command {
        Command::Put { file } => {
            let mut input: Box<dyn tokio::io::AsyncRead + Unpin> = if file.as_os_str() == "-" {
                Box::new(tokio::io::stdin())
            } else {
                Box::new(tokio::fs::File::open(&file).await?)
            };
            let mut uploader = Uploader::new(
                grid,
                EncodingParams::default(),
                UploadOptions::default(),
                None,
            )
            .await?;
            let mut buffer = vec![0u8; 256 << 10];
            loop {
                let n = input.read(&mut buffer).await?;
                if n == 0 {
                    break;
                }
                uploader.write(Bytes::copy_from_slice(&buffer[..n])).await?;
            }
            println!("{}", uploader.finish().await?);
        }
        Command::Get { cap } => {
            let cap: FileCap = cap.parse()?;
            let downloader = std::sync::Arc::new(Downloader::open(&grid, &cap).await?);
            let mut stream = std::pin::pin!(downloader.stream(0));
            let mut out = tokio::io::stdout();
            while let Some(piece) = stream.next().await {
                out.write_all(&piece?).await?;
            }
            out.flush().await?;
        }
        Command::Verify { cap } => {
            let cap: FileCap = cap.parse()?;
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
