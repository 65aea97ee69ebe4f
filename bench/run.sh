#!/usr/bin/env bash
# End-to-end HTTP benchmark: griddav vs dav-server LocalFs vs rclone serve webdav.
# Writes docs/BENCHMARKS.md and docs/benchmarks-close-latency.svg.
#
#   bash bench/run.sh                       # 16 MiB, 256 MiB, 1 GiB, 4 GiB (3-4 minutes on 2 cores, 20 GB of disk)
#   GRIDDAV_BENCH_QUICK=1 bash bench/run.sh # CI: 16 and 256 MiB
#
# Every knob (sizes, peers, scenarios, repeats, directories) is an environment
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
