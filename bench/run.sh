#!/usr/bin/env bash
# End-to-end HTTP benchmark: griddav vs dav-server LocalFs vs rclone serve webdav,
# every scenario of issue 13. Writes docs/BENCHMARKS.md (with its targets table)
# and docs/benchmarks-close-latency.svg.
#
#   bash bench/run.sh                       # the full run, each size the median of 3 (about 16-18 minutes on 2 cores, 25 GB of disk)
#   GRIDDAV_BENCH_QUICK=1 bash bench/run.sh # a few minutes: smaller sizes, fewer files and entries
#
# Scenarios (GRIDDAV_BENCH_SCENARIOS=sizes,small,folders,concurrent,slow,ceilings):
#   sizes       one large PUT, GET and 32 KiB Range GETs at 16 MiB, 256 MiB, 1 GiB, 4 GiB
#   small       10,000 files of 1-64 KiB as Finder and as Explorer copy them, 1 and 8 clients
#   folders     PROPFIND Depth: 1 of folders of 1,000, 10,000 and 100,000 entries
#   concurrent  64 clients PUT 64 MiB each at once, then GET them, vs one stream
#   slow        griddav with its grid behind a 40 MB/s link
#   ceilings    the disk alone: a 3-of-10 PUT's share writes, a cold read of three shares, durable 4 KiB appends
# Every knob (sizes, peers, counts, repeats, directories) is an environment
# variable described at the top of benches/http/main.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v rclone >/dev/null; then
    case ",${GRIDDAV_BENCH_PEERS:-griddav,localfs,rclone}," in
    *,rclone,*)
        echo "bench/run.sh: rclone not found (apt-get install -y rclone), or set GRIDDAV_BENCH_PEERS=griddav,localfs" >&2
        exit 1
        ;;
    esac
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
exec cargo bench --bench http
