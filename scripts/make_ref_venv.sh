#!/usr/bin/env bash
# The reference AdapterHub library (adapters 1.3.0 on transformers 4.57.6) in its own virtualenv, for the
# compatibility tests and benchmarks. madx_core itself never imports it.
#   bash scripts/make_ref_venv.sh [DIR]     (default: .ref-venv in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.ref-venv}"
if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "import adapters, transformers; assert transformers.__version__ == '4.57.6'" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$dir"
# torch 2.13.0 is the CPU build pip finds on local disk; pinned exactly, or pip would fetch a CUDA build.
"$dir/bin/python" -m pip install -q --upgrade pip
"$dir/bin/python" -m pip install -q torch==2.13.0 transformers==4.57.6 adapters==1.3.0 safetensors
"$dir/bin/python" -c "import adapters; print('reference library:', adapters.__version__)"
