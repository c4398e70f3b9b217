# Sourced by scripts/demo and scripts/test: make the virtual environment on first use.
# Needs only Python >= 3.11 and the package registries.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.installed"

pick_python() {
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "giosg_visitor needs Python >= 3.11 on PATH" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    # Say once what the wait is for; pip's own output goes to a log, shown only on failure.
    LOG="$VENV/install.log"
    if [ -f "$STAMP" ]; then
        echo "Updating the environment in .venv (pyproject.toml changed)..." >&2
    else
        echo "Setting up the environment in .venv (first run only; this takes a minute)..." >&2
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$(pick_python)" -m venv "$VENV"
    fi
    if ! {
        "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade "pip>=25.1" &&
            "$VENV/bin/python" -m pip install --disable-pip-version-check \
                -e "$ROOT[fake,redis,trio]" --group "$ROOT/pyproject.toml:dev"
    } >"$LOG" 2>&1; then
        echo "Setting up .venv failed; the end of $LOG:" >&2
        tail -n 25 "$LOG" >&2
        exit 1
    fi
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
