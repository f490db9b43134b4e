#!/usr/bin/env bash
# The reference AdapterHub library (adapters 1.3.0 on transformers 4.57.6) in its own virtualenv, for the
# compatibility tests, the fixtures in tests/fixtures/adapterhub and the benchmarks. madx_core never imports it.
#   bash scripts/make_ref_venv.sh [DIR]     (default: .ref-venv in the repository root; git-ignored)
# Idempotent: when DIR already holds exactly these versions it returns at once (no import of torch).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.ref-venv}"
pins=(adapters==1.3.0 transformers==4.57.6 torch==2.13.0 safetensors)

# Installed versions read from package metadata: fast, and proves the pins rather than mere importability.
installed_ok() {
  [ -x "$dir/bin/python" ] && "$dir/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
want = {"adapters": "1.3.0", "transformers": "4.57.6", "torch": "2.13.0"}
got = {name: version(name).split("+")[0] for name in want}
assert got == want, got
version("safetensors")
EOF
}

if installed_ok; then
  exit 0
fi
python3 -m venv "$dir"
# torch 2.13.0 is the CPU build pip finds on local disk; pinned exactly, or pip would fetch a multi-GB CUDA build.
"$dir/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}"
installed_ok || { echo "make_ref_venv: $dir does not hold the pinned versions after install" >&2; exit 1; }
"$dir/bin/python" -c "import adapters, transformers; print('reference library: adapters', adapters.__version__, 'on transformers', transformers.__version__)"
