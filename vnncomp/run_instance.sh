#!/usr/bin/env bash
# VNN-COMP: decide one instance and write the results file.
#   run_instance.sh v1 CATEGORY ONNX VNNLIB [RESULTS [TIMEOUT]]
# RESULTS (default results.txt) gets one line: sat, unsat, unknown, timeout or error; sat is followed by
# the counterexample ((X_0 v) ... (Y_0 v)), checked with onnxruntime in float32. TIMEOUT (seconds, default
# 60) counts from the start of the python process. .onnx/.vnnlib may be gzip-compressed. Extra options in
# ONNXDUAL_VNNCOMP_OPTIONS, e.g. --counterexample-tolerance (VNN-COMP's 1e-4 witness tolerance; README.md).
set -uo pipefail
if [ "${1:-}" != "v1" ] || [ $# -lt 4 ]; then
  echo "usage: run_instance.sh v1 CATEGORY ONNX VNNLIB [RESULTS [TIMEOUT]]" >&2
  exit 1
fi
category="$2" onnx="$3" vnnlib="$4" results="${5:-results.txt}" timeout="${6:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${ONNXDUAL_PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python="python3"
rm -f "$results"
"$python" -m onnxdual_cli.verify vnncomp "$category" "$onnx" "$vnnlib" "$results" "$timeout" \
  ${ONNXDUAL_VNNCOMP_OPTIONS:-}
status=$?
if [ ! -s "$results" ]; then  # the process died before writing anything
  echo "error" > "$results"
fi
exit $status
