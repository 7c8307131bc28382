#!/usr/bin/env bash
# Run every benchmark's real version in sequence (about 45-50 minutes on 2 cores), each
# waiting for an idle machine before every measurement, and write one combined log.
#
#   bash benchmarks/run_all.sh            # real versions -> benchmarks/results/*.json + log
#   bash benchmarks/run_all.sh --quick    # every smoke version (about 6-7 minutes)
#
# Needs: the package installed (pip install -e .), Debian's nginx-light and wrk for
# generator_overhead (apt-get install -y nginx-light wrk; without nginx it loads the
# exchange's /health, without wrk it leaves wrk out). Run it on a quiet machine: other
# engineers' tests, builds or browsers on the same cores are noise in every figure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
mode="${1:-}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$here/results"
log="$here/results/run_all-${stamp}${mode:+-quick}.log"
py="${PYTHON:-python}"

# order: cheap first, the 11-minute memory run last
benches=(report_render run_default saturation_accuracy generator_overhead stream_overhead real_aa memory)
failed=()
start_all=$SECONDS
{
    echo "# perfgate benchmarks ${mode:-real} — started $(date -u +%FT%TZ) on $(hostname)"
    echo "# commit $(git -C "$repo" rev-parse --short HEAD), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$log"
for b in "${benches[@]}"; do
    t0=$SECONDS
    echo | tee -a "$log"
    echo "## $b ($(date -u +%T))" | tee -a "$log"
    # stdout (the Markdown table) and stderr (progress) both go to the log, in order
    if "$py" "$here/$b.py" $mode 2>&1 | tee -a "$log"; then
        status=ok
    else
        status="FAILED"
        failed+=("$b")
    fi
    echo "-- $b: $status in $((SECONDS - t0)) s" | tee -a "$log"
done
echo | tee -a "$log"
echo "# done in $(((SECONDS - start_all) / 60)) min; failed: ${failed[*]:-none}" | tee -a "$log"
echo "# JSON: $here/results/<name>${mode:+-quick}.json; log: $log"
[ ${#failed[@]} -eq 0 ]
