#!/usr/bin/env bash
# make demo: start the embedded platform, deploy examples/hello, call it, print the
# answer, stop everything. --keep leaves the platform running and says where to look.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true

export OFC_STATE_DIR="${OFC_STATE_DIR:-$PWD/.ofc}"
export OFC_GATEWAY_PORT="${OFC_GATEWAY_PORT:-8080}"
ofc=./bin/ofc
gateway="http://127.0.0.1:$OFC_GATEWAY_PORT"

stop() { [ "$keep" = true ] || "$ofc" down >/dev/null 2>&1 || true; }
trap stop EXIT

"$ofc" down >/dev/null 2>&1 || true
echo "==> starting the platform on $gateway (state in $OFC_STATE_DIR)"
"$ofc" up --detach
echo "==> deploying examples/stack.yml"
start=$(date +%s.%N)
(cd examples && "../$ofc" deploy)
ready=$(date +%s.%N)
echo "==> calling $gateway/function/hello?name=demo"
answer=$(curl -fsS "$gateway/function/hello?name=demo")
echo "$answer"
.venv/bin/python -c "print(f'deploy-to-live: {$ready - $start:.2f} s')"
case "$answer" in
  *"Hello, demo!"*) ;;
  *) echo "unexpected answer" >&2; exit 1 ;;
esac
if [ "$keep" = true ]; then
  echo "==> still running: '$ofc list', '$ofc logs hello', '$ofc invoke hello'; stop with '$ofc down'"
fi
