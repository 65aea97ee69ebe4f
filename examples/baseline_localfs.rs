//! The benchmark's baseline peer: dav-server's own LocalFs on a plain
//! directory, behind exactly griddav's hyper set-up (`griddav::server::serve`,
//! the same connection builder, body checks and read buffer size), with no
//! encryption, coding or namespace database. Whatever griddav is slower by
//! is the price of its engine.
//!
//!     cargo run --release --example baseline_localfs -- DIR [ADDR]
//!
//! prints `baseline listening on http://ADDR/` once it accepts connections.
//! `benches/http/main.rs` includes this file and runs the same server as a child
//! process of itself, so it needs no separate build.

use std::path::PathBuf;

use dav_server::fakels::FakeLs;
use dav_server::localfs::LocalFs;
use dav_server::DavHandler;

/// griddav's default `read_buf_size`: both servers read in the same steps.
pub(crate) const READ_BUF_SIZE: usize = 256 << 10;

/// Serves `dir` on `listen` until the process is killed.
pub(crate) fn serve_localfs(dir: PathBuf, listen: std::net::SocketAddr) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handler = DavHandler::builder()
            .filesystem(LocalFs::new(dir, false, false, false))
            .locksystem(FakeLs::new())
            .read_buf_size(READ_BUF_SIZE)
            .build_handler();
        let listener = tokio::net::TcpListener::bind(listen).await?;
        {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "baseline listening on http://{}/",
                listener.local_addr()?
            )?;
            stdout.flush()?;
        }
        griddav::server::serve(listener, handler.into(), std::future::pending()).await
    })
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let listen = match args.next() {
        Some(addr) => addr
            .to_string_lossy()
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        None => "127.0.0.1:4919".parse().expect("address"),
    };
    serve_localfs(dir, listen)
}
