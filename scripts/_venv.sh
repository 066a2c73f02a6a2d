# Sourced by scripts/up and scripts/test: make sure .venv exists with Courier installed.
# Usage: ensure_venv EXTRAS   (EXTRAS is "" or "[test]")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${COURIER_VENV:-$ROOT/.venv}"
ensure_venv() {
  local extras="$1"
  local py="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
  fi
  local stamp="$VENV/.courier-installed$extras"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q -e "$ROOT$extras"
    touch "$stamp"
  fi
}
