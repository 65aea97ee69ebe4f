//! Report writing for the HTTP benchmark: the machine description, the
//! Markdown tables of docs/BENCHMARKS.md and the close-latency SVG. The
//! measuring is in main.rs.

use super::*;

pub(super) struct Machine {
    cores: String,
    cpu: String,
    memory: String,
    disk: String,
    kernel: String,
    writeback: String,
    pub(super) load_before: String,
    pub(super) load_after: String,
    rclone: String,
}

pub(super) fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(super) fn machine(root: &Path) -> Machine {
    let root = root.display().to_string().replace('\'', "");
    Machine {
        cores: sh("nproc"),
        cpu: sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-"),
        memory: sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo"),
        disk: sh(&format!(
            "df -hT '{root}' | awk 'NR==2 {{print $1\", \"$2\", \"$3\" (\"$5\" free)\"}}'; \
             d=$(df --output=source '{root}' | tail -1 | sed 's|/dev/||'); \
             r=$(cat /sys/block/$d/queue/rotational 2>/dev/null); \
             [ -n \"$r\" ] && {{ [ \"$r\" = 0 ] && echo ', non-rotational (sysfs)' || echo ', rotational (sysfs)'; }}"
        ))
        .replace('\n', ""),
        kernel: sh("uname -sr"),
        writeback: sh("echo \"vm.dirty_ratio $(cat /proc/sys/vm/dirty_ratio)%, vm.dirty_background_ratio $(cat /proc/sys/vm/dirty_background_ratio)%\""),
        load_before: loadavg(),
        load_after: String::new(),
        rclone: sh("rclone version 2>/dev/null | head -1"),
    }
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.digits$}")
    }
}

fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// The first hand-written section of docs/BENCHMARKS.md: it and all after
/// it survive a regeneration.
const HAND_WRITTEN: &str = "## Durable namespace commits";

struct Target {
    what: String,
    wanted: String,
    measured: String,
    holds: Option<bool>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_report(
    settings: &Settings,
    machine: &Machine,
    results: &BTreeMap<(Peer, u64), Measure>,
    smalls: &BTreeMap<(small::Client, usize, Peer), small::SmallRun>,
    folders: &BTreeMap<Peer, Vec<folders::FolderRun>>,
    slow: Option<&SlowGrid>,
    conc: &[Concurrent],
    ceilings: Option<&ceilings::Ceilings>,
    started: &str,
    took: Duration,
) -> io::Result<()> {
    let mut md = String::new();
    let k = 3.0;
    let n = 10.0;
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `bash bench/run.sh` (`cargo bench --bench http`, source `benches/http/`){} on {started}, in {:.0} s{}. \
         Do not edit by hand: run it again.\n",
        if settings.quick { " in quick mode" } else { "" },
        took.as_secs_f64(),
        if settings.repeat > 1 {
            format!("; each size and server is the median of {} fresh runs (`GRIDDAV_BENCH_REPEAT={}`)", settings.repeat, settings.repeat)
        } else {
            String::new()
        }
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| cores (`nproc`) | {} |", machine.cores);
    let _ = writeln!(md, "| CPU | {} |", machine.cpu);
    let _ = writeln!(md, "| memory | {} |", machine.memory);
    let _ = writeln!(md, "| disk (benchmark directory) | {} |", machine.disk);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| page-cache write-back | {} |", machine.writeback);
    let _ = writeln!(
        md,
        "| load average (1, 5, 15 min) | {} at the start, {} at the end |",
        machine.load_before, machine.load_after
    );
    let _ = writeln!(md, "| peers | griddav 3-of-10 on ten local directories (defaults); dav-server 0.11 LocalFs (`examples/baseline_localfs.rs`, griddav's hyper set-up); {} |\n", machine.rclone);

    let _ = writeln!(md, "## How it measures\n");
    let _ = writeln!(
        md,
        "Each cell is a fresh server process on an empty directory, on loopback. The client writes the request itself \
         on a raw TCP socket (`Content-Length`, body in 1 MiB `write`s of random bytes) and reads the answer itself:\n\n\
         - **PUT MB/s**: plaintext bytes / (first body byte written .. status line received).\n\
         - **close**: last body `write` returned .. status line received: what a client's `close()` waits for. \
         The last few MB may still sit in the socket buffers when the clock starts, so this includes the server \
         reading them.\n\
         - **unread at close**: those bytes, when the last `write` returned: the client socket's send queue plus \
         the server socket's receive queue (`/proc/net/tcp`). A `write` returns once its bytes are in the client's \
         own send buffer, which the kernel grows to `net.ipv4.tcp_wmem`'s maximum (4 MiB by default); a server \
         that stores what it reads at R MB/s spends about (unread / R) of its close reading them.\n\
         - **first share**: first body byte written .. a file with at least one byte exists where the server stores \
         data (griddav: `grid/server-*/incoming/`; the peers: the served directory), polled every 0.2 ms from \
         another thread.\n\
         - **peak RSS**: the server's `VmHWM` from `/proc/PID/status`, reset through `/proc/PID/clear_refs` before \
         the PUT and again before the GET.\n\
         - **server CPU**: user + system seconds the server used during the PUT.\n\
         - **GET MB/s**: whole file, checked byte for byte by the client. {}\
         **Range**: median of 20 `Range` GETs of \
         32 KiB in the middle of the file on one keep-alive connection (after one warm-up).\n\n\
         griddav makes its shares durable (`fdatasync` as it goes, and at finish); LocalFs and rclone leave the \
         file in the page cache. griddav writes {:.2}x the file's bytes (3-of-10 shares plus hash trees).\n",
        if settings.cold_get {
            "Read cold, the same for every server: the page cache is written back and dropped \
             (`sync; echo 3 > /proc/sys/vm/drop_caches`) before each GET. Otherwise the comparison would not be \
             like for like: griddav writes its shares with direct I/O and keeps nothing cached, while LocalFs and \
             rclone leave the whole file cached, so their GET right after the PUT would be served from memory and \
             griddav's from the disk. "
        } else {
            "The page cache is **not** dropped before the GET (the benchmark may not: not root), so LocalFs's and \
             rclone's GET right after the PUT is served from memory and griddav's (direct I/O) from the disk. "
        },
        n / k
    );

    let sizes: Vec<u64> = settings.sizes.clone();
    let _ = writeln!(md, "## Results by file size\n");
    let _ = writeln!(
        md,
        "| server | size | PUT MB/s | close ms | unread at close MiB | first share ms | PUT peak RSS MiB | server CPU s | GET MB/s | GET peak RSS MiB | 32 KiB Range ms |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for peer in &settings.peers {
        for &size in &sizes {
            if let Some(m) = results.get(&(*peer, size)) {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |{}",
                    peer.name(),
                    size_name(size),
                    fmt(m.put_mbs, 0),
                    fmt(m.close_ms, 1),
                    fmt(m.unread_mib, 1),
                    fmt(m.first_share_ms, 1),
                    fmt(m.put_rss_mib, 0),
                    fmt(m.put_cpu_s, 1),
                    fmt(m.get_mbs, 0),
                    fmt(m.get_rss_mib, 0),
                    fmt(m.range_ms, 2),
                    m.error
                        .as_deref()
                        .map(|e| format!(" **error: {e}**"))
                        .unwrap_or_default()
                );
            }
        }
    }
    let errors: Vec<String> = results
        .iter()
        .filter_map(|((p, s), m)| {
            m.error
                .as_ref()
                .map(|e| format!("{} {}: {e}", p.name(), size_name(*s)))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(md, "\nErrors: {}", errors.join("; "));
    }

    let peers: Vec<Peer> = settings
        .peers
        .iter()
        .copied()
        .filter(|p| *p != Peer::Griddav)
        .collect();
    if settings.peers.contains(&Peer::Griddav) && !peers.is_empty() {
        let _ = writeln!(md, "\n## Ratios griddav / peer\n");
        let _ = writeln!(
            md,
            "Above 1 means griddav is faster (MB/s) or larger (time, memory).\n"
        );
        let _ = writeln!(
            md,
            "| peer | size | PUT MB/s | close | first share | PUT peak RSS | GET MB/s | Range |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
        for peer in &peers {
            for &size in &sizes {
                let (Some(g), Some(p)) = (
                    results.get(&(Peer::Griddav, size)),
                    results.get(&(*peer, size)),
                ) else {
                    continue;
                };
                let r = |a: f64, b: f64| fmt(a / b, 2);
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    peer.name(),
                    size_name(size),
                    r(g.put_mbs, p.put_mbs),
                    r(g.close_ms, p.close_ms),
                    r(g.first_share_ms, p.first_share_ms),
                    r(g.put_rss_mib, p.put_rss_mib),
                    r(g.get_mbs, p.get_mbs),
                    r(g.range_ms, p.range_ms)
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\n![close latency against file size](benchmarks-close-latency.svg)\n"
    );

    if let Some(s) = slow {
        let expanded = s.size as f64 * n / k;
        let spool_close = expanded / s.rate;
        let _ = writeln!(md, "## Slow grid\n");
        let _ = writeln!(
            md,
            "griddav with every storage server behind one shared link of {:.0} MB/s for share writes \
             (a rate-limiting `ShareStore` wrapper around the ten local directories, `griddav::grid::ThrottledStore`; \
             the server is otherwise built as `griddav serve` builds it, in a separate process), one PUT of {}. \
             A spool-then-upload server (Tahoe-LAFS's HTTP front end, a WebDAV gateway that stages to disk) \
             receives the body first and uploads on close, so its close waits for all {:.0} MB of shares \
             ({:.2}x the file) to cross the link: {:.1} s, and at least {:.1} s (size / bandwidth) even if it stored \
             only the plaintext.\n",
            s.rate / 1e6,
            size_name(s.size),
            expanded / 1e6,
            n / k,
            spool_close,
            s.size as f64 / s.rate
        );
        let _ = writeln!(
            md,
            "| | PUT total s | close | first share ms | peak RSS MiB |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        let _ = writeln!(
            md,
            "| griddav, streaming (measured) | {} | {} ms | {} | {} |",
            fmt(s.put_secs, 1),
            fmt(s.close_ms, 1),
            fmt(s.first_share_ms, 1),
            fmt(s.rss_mib, 0)
        );
        let _ = writeln!(
            md,
            "| spool then upload (computed: share bytes / link) | >= {:.1} | {:.1} s | after the whole body | |",
            spool_close, spool_close
        );
        let _ = writeln!(
            md,
            "\nStreaming, the close waits only for what is still queued inside griddav when the last byte \
             arrives (the body bytes still in the socket buffers, the segments being coded and the blocks queued \
             per share: about {:.0} MB of shares at the defaults): that is {:.1} s at this link speed, whatever the file size; with spooling it is the \
             whole file.",
            s.close_ms / 1e3 * s.rate / 1e6,
            s.close_ms / 1e3
        );
        if let Some(e) = &s.error {
            let _ = writeln!(md, "\n**error: {e}**");
        }
        let _ = writeln!(md);
    }

    if !smalls.is_empty() {
        let _ = writeln!(md, "## Small files\n");
        let files = smalls.values().next().map_or(0, |r| r.files);
        let _ = writeln!(
            md,
            "{files} files of 1 to 64 KiB (spread evenly: a quarter at or under griddav's 16 KiB inline threshold, the rest on \
             the grid) copied into one new folder, each client on its own keep-alive connection, with the requests the client \
             sends for each file (`benches/http/small.rs`): **Finder**: PROPFIND Depth 0 of the folder, PUT (chunked, \
             `X-Expected-Entity-Length`), PROPPATCH, PUT of the 4 KiB `._` file; **Explorer**: PROPFIND of the file (404), \
             PUT of 0 bytes, LOCK, PROPPATCH of the Win32 times, PUT of the data, UNLOCK. Files/s counts the data files over \
             the wall time; every 97th file is read back and checked. griddav answers each change only once it is synced \
             (group commits); LocalFs and rclone leave it in the page cache. LocalFs answers Finder's PROPPATCH 501 (it keeps no \
             dead properties), which counts as answered, and closes the connection after it: the client then opens a new one.\n"
        );
        let _ = writeln!(
            md,
            "| client | clients | server | files/s | requests/s | one file's requests, median ms | peak RSS MiB |"
        );
        let _ = writeln!(md, "|---|---:|---|---:|---:|---:|---:|");
        for ((client, clients, peer), r) in smalls {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |{}",
                client.name(),
                clients,
                peer.name(),
                fmt(r.files_per_s, 0),
                fmt(r.requests_per_s, 0),
                fmt(r.file_ms, 2),
                fmt(r.peak_rss_mib, 0),
                r.error
                    .as_deref()
                    .map(|e| format!(" **error: {e}**"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(md);
    }

    if !folders.is_empty() {
        let _ = writeln!(md, "## Big folders\n");
        let _ = writeln!(
            md,
            "PROPFIND Depth: 1 of one folder, naming the 18 properties Windows Explorer asks for (most of them unknown to \
             every server: 404 propstats), median of {} runs (`benches/http/folders.rs`). First byte: request written .. \
             status line read; total: .. last byte of the answer. Peak RSS: the server's `VmHWM` during the request (reset \
             just before); growth: that peak minus its RSS just before. griddav's folders are filled with empty PUTs over \
             HTTP, the peers' directly in the directory they serve. Before the PROPFINDs, griddav is made to copy its namespace \
             into the grid (SIGUSR1) and the copy is waited for: otherwise its periodic copy (30 s after changes, an upload \
             with about 25 MiB of buffers) can fall inside a PROPFIND and be counted as the PROPFIND's memory. Allprop: the \
             total time of the same PROPFIND with no body, which RFC 4918 makes an allprop (every property, lockdiscovery \
             and dead properties included), median of as many runs.\n",
            folders::REPEATS
        );
        let _ = writeln!(
            md,
            "| server | entries | first byte ms | total ms | answer MiB | peak RSS MiB | growth MiB | allprop total ms |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (peer, runs) in folders {
            for r in runs {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |{}",
                    peer.name(),
                    r.entries,
                    fmt(r.first_byte_ms, 1),
                    fmt(r.total_ms, 1),
                    fmt(r.answer_mib, 1),
                    fmt(r.peak_rss_mib, 0),
                    fmt(r.growth_mib, 1),
                    fmt(r.allprop_total_ms, 1),
                    r.error
                        .as_deref()
                        .map(|e| format!(" **error: {e}**"))
                        .unwrap_or_default()
                );
            }
        }
        let _ = writeln!(md);
    }

    if !conc.is_empty() {
        let _ = writeln!(md, "## Many clients\n");
        let _ = writeln!(
            md,
            "{} clients each PUT {} at the same moment (one connection each), then GET them all back at once, checked byte for byte. \
             MB/s is all plaintext bytes / wall time of the phase. Single stream: one PUT and one GET of the same size alone, \
             on the same server just before.\n",
            conc[0].clients,
            size_name(conc[0].size)
        );
        let _ = writeln!(md, "| server | single PUT MB/s | together PUT MB/s | PUT peak RSS MiB | slowest close ms | single GET MB/s | together GET MB/s | GET peak RSS MiB | errors |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in conc {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.peer.name(),
                fmt(c.single_put_mbs, 0),
                fmt(c.put_mbs, 0),
                fmt(c.put_rss_mib, 0),
                fmt(c.max_close_ms, 1),
                fmt(c.single_get_mbs, 0),
                fmt(c.get_mbs, 0),
                fmt(c.get_rss_mib, 0),
                c.errors.len()
            );
        }
        for c in conc {
            for e in c.errors.iter().take(5) {
                let _ = writeln!(md, "\n- {}: {e}", c.peer.name());
            }
        }
        let _ = writeln!(md);
    }

    // Targets of issue 13, for 2 cores, loopback, the local 3-of-10 grid.
    let mut targets = Vec::new();
    let g = |size: u64| results.get(&(Peer::Griddav, size));
    let gs: Vec<(u64, &Measure)> = sizes.iter().filter_map(|&s| g(s).map(|m| (s, m))).collect();
    // The sizes the large-file targets name; the largest measured in a
    // quick or reduced run.
    let named: Vec<(u64, &Measure)> = {
        let v: Vec<(u64, &Measure)> = gs
            .iter()
            .filter(|(s, _)| *s == 1024 * MIB || *s == 4096 * MIB)
            .copied()
            .collect();
        if v.is_empty() {
            gs.last().copied().into_iter().collect()
        } else {
            v
        }
    };
    for &(s, m) in &named {
        targets.push(Target {
            what: format!("GET of one large file, {}", size_name(s)),
            wanted: ">= 2000 MB/s".into(),
            measured: format!("{} MB/s", fmt(m.get_mbs, 0)),
            holds: Some(m.get_mbs >= 2000.0),
        });
        if let Some(r) = results.get(&(Peer::Rclone, s)) {
            targets.push(Target {
                what: format!("GET of one large file vs rclone, {}", size_name(s)),
                wanted: ">= rclone's".into(),
                measured: format!("{} vs {} MB/s", fmt(m.get_mbs, 0), fmt(r.get_mbs, 0)),
                holds: Some(m.get_mbs >= r.get_mbs),
            });
        }
    }
    if !gs.is_empty() {
        let worst_range = gs.iter().map(|(_, m)| m.range_ms).fold(f64::NAN, f64::max);
        targets.push(Target {
            what: "32 KiB Range GET, every size".into(),
            wanted: "< 1 ms".into(),
            measured: format!("at most {} ms", fmt(worst_range, 2)),
            holds: Some(worst_range < 1.0),
        });
    }
    for &(s, m) in &named {
        targets.push(Target {
            what: format!("PUT of one large file, {}, durable at commit", size_name(s)),
            wanted: ">= 550 MB/s".into(),
            measured: format!("{} MB/s", fmt(m.put_mbs, 0)),
            holds: Some(m.put_mbs >= 550.0),
        });
        let per_gib = m.put_cpu_s / (s as f64 / (1u64 << 30) as f64);
        targets.push(Target {
            what: format!("server CPU per GiB of PUT, {}", size_name(s)),
            wanted: "<= 3.0 CPU-s/GiB".into(),
            measured: format!("{} CPU-s/GiB", fmt(per_gib, 2)),
            holds: Some(per_gib <= 3.0),
        });
    }
    if !gs.is_empty() {
        let worst = gs.iter().map(|(_, m)| m.close_ms).fold(f64::NAN, f64::max);
        targets.push(Target {
            what: "close latency at every size (16 MiB .. 4 GiB)".into(),
            wanted: "<= 20 ms".into(),
            measured: gs
                .iter()
                .map(|(s, m)| format!("{}: {} ms", size_name(*s), fmt(m.close_ms, 1)))
                .collect::<Vec<_>>()
                .join(", "),
            holds: Some(worst <= 20.0),
        });
    }
    for ((client, clients, peer), r) in smalls {
        if *peer != Peer::Griddav {
            continue;
        }
        let rclone = smalls.get(&(*client, *clients, Peer::Rclone));
        targets.push(Target {
            what: format!(
                "small files as {} copies them, {} client{}",
                client.name(),
                clients,
                if *clients == 1 { "" } else { "s" }
            ),
            wanted: ">= rclone's files/s".into(),
            measured: format!(
                "{} vs {} files/s",
                fmt(r.files_per_s, 0),
                rclone.map_or("n/a".into(), |r| fmt(r.files_per_s, 0))
            ),
            holds: rclone.map(|x| r.error.is_none() && r.files_per_s >= x.files_per_s),
        });
    }
    if let Some(runs) = folders.get(&Peer::Griddav) {
        for r in runs {
            let rclone = folders
                .get(&Peer::Rclone)
                .and_then(|v| v.iter().find(|x| x.entries == r.entries));
            targets.push(Target {
                what: format!("PROPFIND Depth 1 of {} entries, total time", r.entries),
                wanted: "<= rclone's".into(),
                measured: format!(
                    "{} vs {} ms",
                    fmt(r.total_ms, 1),
                    rclone.map_or("n/a".into(), |x| fmt(x.total_ms, 1))
                ),
                holds: rclone.map(|x| r.error.is_none() && r.total_ms <= x.total_ms),
            });
        }
        if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
            // Flat: the largest folder costs at most 16 MiB more than the
            // smallest (allocator noise), whatever the number of entries.
            targets.push(Target {
                what: "PROPFIND server memory flat in the folder's size".into(),
                wanted: "growth at the largest <= growth at the smallest + 16 MiB".into(),
                measured: runs
                    .iter()
                    .map(|r| format!("{}: +{} MiB", r.entries, fmt(r.growth_mib, 1)))
                    .collect::<Vec<_>>()
                    .join(", "),
                holds: Some(
                    first.error.is_none()
                        && last.error.is_none()
                        && last.growth_mib <= first.growth_mib + 16.0,
                ),
            });
        }
    }
    if let Some(c) = conc.iter().find(|c| c.peer == Peer::Griddav) {
        let what = format!("{} clients x {}", c.clients, size_name(c.size));
        targets.push(Target {
            what: format!("{what}: PUT together vs one stream"),
            wanted: ">= 90%".into(),
            measured: format!(
                "{}% ({} vs {} MB/s)",
                fmt(c.put_mbs / c.single_put_mbs * 100.0, 0),
                fmt(c.put_mbs, 0),
                fmt(c.single_put_mbs, 0)
            ),
            holds: Some(c.put_mbs >= 0.9 * c.single_put_mbs),
        });
        targets.push(Target {
            what: format!("{what}: GET together vs one stream"),
            wanted: ">= 90%".into(),
            measured: format!(
                "{}% ({} vs {} MB/s)",
                fmt(c.get_mbs / c.single_get_mbs * 100.0, 0),
                fmt(c.get_mbs, 0),
                fmt(c.single_get_mbs, 0)
            ),
            holds: Some(c.get_mbs >= 0.9 * c.single_get_mbs),
        });
        targets.push(Target {
            what: format!("{what}: errors"),
            wanted: "none".into(),
            measured: format!("{}", c.errors.len()),
            holds: Some(c.errors.is_empty()),
        });
        let peak = c.put_rss_mib.max(c.get_rss_mib);
        targets.push(Target {
            what: format!("{what}: server peak RSS"),
            wanted: "<= 400 MiB".into(),
            measured: format!(
                "{} MiB (PUT {}, GET {})",
                fmt(peak, 0),
                fmt(c.put_rss_mib, 0),
                fmt(c.get_rss_mib, 0)
            ),
            holds: Some(peak <= 400.0),
        });
    }
    if let Some(s) = slow {
        let spool = s.size as f64 * n / k / s.rate;
        targets.push(Target {
            what: format!(
                "slow grid ({:.0} MB/s), {} PUT: close small vs spool-then-upload",
                s.rate / 1e6,
                size_name(s.size)
            ),
            wanted: "small: < 1/10 of spool-then-upload's".into(),
            measured: format!("{} ms vs {:.1} s", fmt(s.close_ms, 1), spool),
            holds: Some(s.error.is_none() && s.close_ms / 1e3 < spool / 10.0),
        });
    }
    if let Some(c) = ceilings {
        write_ceilings(&mut md, c, results.get(&(Peer::Griddav, c.size)));
    }
    let _ = writeln!(md, "## Targets\n");
    if settings.quick || !sizes.contains(&(4096 * MIB)) {
        let _ = writeln!(md, "Quick run or reduced sizes: the large-file targets are checked against the largest size measured, not the sizes the targets name, and the other scenarios are smaller than the issue's.\n");
    }
    let _ = writeln!(md, "The targets of issue 13. A missing figure (a scenario not run, or a peer left out) shows as n/a.\n");
    let _ = writeln!(md, "| target | wanted | measured | holds |");
    let _ = writeln!(md, "|---|---|---|---|");
    for t in &targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.wanted,
            t.measured,
            match t.holds {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            }
        );
    }
    let _ = writeln!(md);

    // Sections written by hand (from other benchmarks) are kept.
    let path = settings.out.join("BENCHMARKS.md");
    if let Ok(old) = std::fs::read_to_string(&path) {
        if let Some(at) = old.find(HAND_WRITTEN) {
            md.push('\n');
            md.push_str(&old[at..]);
        }
    }
    std::fs::create_dir_all(&settings.out)?;
    std::fs::write(path, md)?;
    std::fs::write(
        settings.out.join("benchmarks-close-latency.svg"),
        svg(settings, results, slow),
    )?;
    Ok(())
}

/// The section "What this disk allows" (benches/http/ceilings.rs), with
/// griddav's own figures at the same size (`griddav`) to compare with.
fn write_ceilings(md: &mut String, c: &ceilings::Ceilings, griddav: Option<&Measure>) {
    let size = size_name(c.size);
    let _ = writeln!(md, "## What this disk allows\n");
    let _ = writeln!(
        md,
        "The disk alone, without griddav, measured in the same run on the disk the servers' data is on \
         (`benches/http/ceilings.rs`; each figure the median of {} runs). For a file of {size}, {} threads each \
         write a share file of a third of it ({} bytes) {} and `fdatasync` it, timed from the first write to the \
         last sync; then, {} three of them are read back in 1 MiB buffered reads, four in flight on each, as \
         griddav reads the data shares with four segments in flight. Durable appends: ten threads each write the next 4 KiB of a file of their own (1 MiB of \
         zeros already written) and `fdatasync` it, 200 rounds of all ten; and 200 single 4 KiB writes + \
         `fdatasync` of one file. griddav does at least this I/O for the same work (its shares also carry hash \
         trees), so it cannot beat these figures while the disk keeps that pace.\n",
        ceilings::RUNS,
        ceilings::SHARES,
        c.share_len,
        if c.direct {
            "with direct I/O (`O_DIRECT`, 1 MiB writes of random bytes)"
        } else {
            "through the page cache (this file system takes no direct I/O; griddav falls back the same way), \
             in 1 MiB writes of random bytes,"
        },
        match (c.cold, c.direct) {
            (true, _) => "with the page cache dropped,",
            (false, true) => {
                "without dropping the page cache (not root; nothing of them is cached after direct writes),"
            }
            (false, false) => {
                "**warm** (not root: the page cache, which they were written through, is not dropped),"
            }
        }
    );
    let error = |e: &str| format!("n/a (error {e})");
    let with = |what: &str, figure: Option<f64>| match figure {
        Some(v) => format!("{what} (griddav, {size}: {} MB/s)", fmt(v, 0)),
        None => what.to_string(),
    };
    let _ = writeln!(md, "| ceiling | measured | compare with |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(
        md,
        "| share writes of a 3-of-10 PUT ({} files, {}, synced) | {} | {} |",
        ceilings::SHARES,
        if c.direct { "direct I/O" } else { "buffered" },
        match &c.write_secs {
            Ok(secs) => format!(
                "{} MB/s of shares = {} MB/s of file",
                fmt(mbs(ceilings::SHARES as u64 * c.share_len, *secs), 0),
                fmt(mbs(c.size, *secs), 0)
            ),
            Err(e) => error(e),
        },
        with("the PUT rows", griddav.map(|m| m.put_mbs))
    );
    let _ = writeln!(
        md,
        "| {} read of the three data shares (3 files in parallel) | {} | {} |",
        c.read_temperature(),
        match &c.read_secs {
            Ok(secs) => format!("{} MB/s of file", fmt(mbs(c.size, *secs), 0)),
            Err(e) => error(e),
        },
        with("the GET rows", griddav.map(|m| m.get_mbs))
    );
    let _ = writeln!(
        md,
        "| ten parallel 4 KiB durable appends (one per share) | {} | a small file's grid PUT |",
        match &c.round_ms {
            Ok((median, p90)) => format!("median {} ms, p90 {} ms", fmt(*median, 2), fmt(*p90, 2)),
            Err(e) => error(e),
        }
    );
    let _ = writeln!(
        md,
        "| one 4 KiB write + fdatasync | {} | each namespace commit |",
        match &c.commit_ms {
            Ok(ms) => format!("{} ms", fmt(*ms, 2)),
            Err(e) => error(e),
        }
    );
    if let (Ok(w), Ok(r)) = (&c.write_secs, &c.read_secs) {
        let (put_ceiling, get_ceiling) = (mbs(c.size, *w), mbs(c.size, *r));
        let _ = write!(
            md,
            "\nWhile the probe ran, a 3-of-10 PUT of {size} could not be faster than {} MB/s on this disk, and a {} GET \
             reading the three data shares not faster than {} MB/s.",
            fmt(put_ceiling, 0),
            c.read_temperature(),
            fmt(get_ceiling, 0)
        );
        let above: Vec<String> = [
            ("PUT", griddav.map(|m| m.put_mbs), put_ceiling),
            ("GET", griddav.map(|m| m.get_mbs), get_ceiling),
        ]
        .into_iter()
        .filter_map(|(what, measured, ceiling)| {
            measured
                .filter(|m| *m > ceiling)
                .map(|m| format!("{what} ({} MB/s)", fmt(m, 0)))
        })
        .collect();
        if !above.is_empty() {
            let _ = write!(
                md,
                " griddav's {} ran faster than that earlier in the run: this disk's pace moves by a quarter or more \
                 between runs and through a run, and the probe runs last, after many GiB written. Read these figures \
                 as the disk near the end of the run, not as a bound on figures measured before.",
                above.join(" and ")
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
}

/// Close latency against file size, both axes logarithmic.
fn svg(
    settings: &Settings,
    results: &BTreeMap<(Peer, u64), Measure>,
    slow: Option<&SlowGrid>,
) -> String {
    let (w, h) = (720.0, 440.0);
    let (left, right, top, bottom) = (80.0, 220.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let sizes = &settings.sizes;
    let xmin = (*sizes.iter().min().unwrap_or(&MIB) as f64).log2() - 0.5;
    let xmax = (*sizes.iter().max().unwrap_or(&MIB) as f64).log2() + 0.5;
    let mut values: Vec<f64> = results
        .values()
        .map(|m| m.close_ms)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let spool = slow.map(|s| s.size as f64 * 10.0 / 3.0 / s.rate * 1e3);
    if let Some(v) = spool {
        values.push(v);
    }
    if let Some(s) = slow {
        if s.close_ms.is_finite() && s.close_ms > 0.0 {
            values.push(s.close_ms);
        }
    }
    let ymin = values
        .iter()
        .cloned()
        .fold(100.0_f64, f64::min)
        .max(0.01)
        .log10()
        .floor();
    let ymax = values
        .iter()
        .cloned()
        .fold(100.0_f64, f64::max)
        .log10()
        .ceil();
    let x = |bytes: f64| left + (bytes.log2() - xmin) / (xmax - xmin) * pw;
    let y = |ms: f64| top + ph - (ms.max(10f64.powf(ymin)).log10() - ymin) / (ymax - ymin) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">PUT close latency (last body byte sent to status) against file size</text>"#,
        w / 2.0
    );
    // Grid lines and labels.
    let mut e = ymin as i32;
    while e <= ymax as i32 {
        let v = 10f64.powi(e);
        let yy = y(v);
        let label = if v >= 1000.0 {
            format!("{} s", v / 1000.0)
        } else {
            format!("{v} ms")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            left + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            left - 6.0,
            yy + 4.0
        );
        e += 1;
    }
    for &size in sizes {
        let xx = x(size as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            top + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + ph + 18.0,
            size_name(size)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">file size (log scale)</text>"#,
        left + pw / 2.0,
        h - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">close latency (log scale)</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    // 100 ms target.
    let t = y(100.0);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{t:.1}" x2="{:.1}" y2="{t:.1}" stroke="#888" stroke-dasharray="6 4"/>"##,
        left + pw
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" fill="#666">target 100 ms</text>"##,
        left + 4.0,
        t - 4.0
    );
    let mut legend = 0.0;
    let mut add_legend = |s: &mut String, color: &str, dash: &str, label: &str| {
        let ly = top + 10.0 + legend * 20.0;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            s,
            r#"<circle cx="{}" cy="{ly}" r="3.5" fill="{color}"/>"#,
            lx + 12.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{label}</text>"#,
            lx + 30.0,
            ly + 4.0
        );
        legend += 1.0;
    };
    for peer in &settings.peers {
        let points: Vec<(f64, f64)> = sizes
            .iter()
            .filter_map(|&size| {
                results
                    .get(&(*peer, size))
                    .filter(|m| m.close_ms.is_finite())
                    .map(|m| (x(size as f64), y(m.close_ms)))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            path.join(" "),
            peer.color()
        );
        for (a, b) in &points {
            let _ = writeln!(
                s,
                r#"<circle cx="{a:.1}" cy="{b:.1}" r="3.5" fill="{}"/>"#,
                peer.color()
            );
        }
        add_legend(&mut s, peer.color(), "", peer.name());
    }
    if let Some(sl) = slow {
        let xx = x(sl.size as f64);
        if sl.close_ms.is_finite() {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="#8e44ad"/>"##,
                xx - 4.0,
                y(sl.close_ms) - 4.0
            );
        }
        if let Some(sp) = spool {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="8" height="8" fill="none" stroke="#8e44ad" stroke-width="2"/>"##,
                xx - 4.0,
                y(sp) - 4.0
            );
        }
        let ly = top + 10.0 + legend * 20.0;
        let lx = left + pw + 14.0;
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="8" height="8" fill="#8e44ad"/><text x="{}" y="{}">griddav, grid at {:.0} MB/s</text>"##,
            lx + 8.0,
            ly - 4.0,
            lx + 30.0,
            ly + 4.0,
            sl.rate / 1e6
        );
        let ly = ly + 20.0;
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="8" height="8" fill="none" stroke="#8e44ad" stroke-width="2"/><text x="{}" y="{}">spool then upload,</text><text x="{}" y="{}">same grid (computed)</text>"##,
            lx + 8.0,
            ly - 4.0,
            lx + 30.0,
            ly + 4.0,
            lx + 30.0,
            ly + 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

// --------------------------------------------------------------------- main
