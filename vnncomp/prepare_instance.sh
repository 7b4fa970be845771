#!/usr/bin/env bash
# VNN-COMP: check that an instance can be run (the network loads, every operator has a dual layer, the
# property parses and fits the network). Exit 0 when it can, non-zero otherwise.
#   prepare_instance.sh v1 CATEGORY ONNX VNNLIB          (.onnx/.vnnlib may be gzip-compressed)
set -uo pipefail
if [ "${1:-}" != "v1" ] || [ $# -lt 4 ]; then
  echo "usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB" >&2
  exit 1
fi
category="$2" onnx="$3" vnnlib="$4"
here="$(cd "$(dirname "$0")" && pwd)"
python="${ONNXDUAL_PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python="python3"
for f in "$onnx" "$vnnlib"; do
  [ -r "$f" ] || { echo "cannot read $f" >&2; exit 1; }
done
echo "preparing $category: $(basename "$onnx") $(basename "$vnnlib")" >&2
exec "$python" -m onnxdual_cli.verify vnncomp-prepare "$onnx" "$vnnlib"
