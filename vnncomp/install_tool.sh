#!/usr/bin/env bash
# VNN-COMP: install onnxdual once on a fresh machine (Ubuntu, python3 >= 3.10).
#   install_tool.sh v1
# Creates vnncomp/.venv with onnxdual and its S-shaped activation plugin (Sigmoid, Tanh). A machine with a
# GPU should have its CUDA build of torch installed into the venv first (pip keeps it).
set -euo pipefail
version="${1:-}"
if [ "$version" != "v1" ]; then
  echo "expected the VNN-COMP script version 'v1' as first argument, got '$version'" >&2
  exit 1
fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
"$python" -m venv "$here/.venv"
"$here/.venv/bin/pip" install --upgrade pip >/dev/null
"$here/.venv/bin/pip" install "$repo" "$repo/plugins/onnxdual-sshaped" "$repo/plugins/onnxdual-maxpool"
"$here/.venv/bin/python" -m onnxdual_cli.verify supports --onnx-operators >/dev/null
echo "onnxdual installed in $here/.venv"
