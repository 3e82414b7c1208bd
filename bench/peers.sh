#!/usr/bin/env bash
# Guardian DNS side by side with its peers, in one run of the shared harness (../shared/bench).
#
#   bench/peers.sh [run.sh options]        e.g.  bench/peers.sh --sizes "0 100k 1m" --repeat 3
#
# Targets: unbound, dnsdist, dnsmasq-address (the peers the engine issue compares against) and
# guardian (this checkout, started with bench/bench.yaml: no metrics listener, default cache).
# Results land in the harness's results directory; its summary.md has the ratios. Everything
# talks to 127.0.0.1 only.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${GD_SHARED:-$ROOT/../shared}
[ -x "$SHARED/bench/run.sh" ] || { echo "no benchmark harness at $SHARED/bench (set GD_SHARED)" >&2; exit 2; }
PY=${GUARDIAN_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
"$PY" -c 'import guardian_dns' 2>/dev/null || { echo "guardian_dns is not importable by $PY (pip install -e .)" >&2; exit 2; }
[ -f "${GD_BENCH_WORK:-${GD_BENCH_HOME:-$HOME/.cache/guardian-bench}/work}/meta.json" ] || "$SHARED/bench/setup.sh"

# STATE_DIRECTORY per size: the first repetition builds and saves the domain table (cold start),
# later ones load it (a restart), so results.jsonl has both "ready" times.
GUARDIAN="guardian=env STATE_DIRECTORY={workdir}/state $PY -m guardian_dns serve --config $HERE/bench.yaml --listen 127.0.0.1:{port} --upstream udp://{upstream} --blocklist bench={list}"
exec "$SHARED/bench/run.sh" --target unbound --target dnsdist --target dnsmasq-address --target "$GUARDIAN" "$@"
