#!/usr/bin/env bash
# GPU acceptance check: one command on a machine with an NVIDIA GPU and driver.
#
#   bash scripts/gpu_check.sh              # install, pytest -m gpu, then the measurements
#   bash scripts/gpu_check.sh --dry-run    # no GPU needed: every step up to TensorRT
#   bash scripts/gpu_check.sh --no-install # reuse the environment of an earlier run
#
# 1. reads the driver's CUDA major from nvidia-smi and picks the matching extra (trt-cu12 or
#    trt-cu13: TensorRT and cuda-python for that CUDA major);
# 2. installs qtool with it into $VENV (default .venv-gpu) and swaps onnxruntime for
#    onnxruntime-gpu, so that calibration and comparison run on the GPU;
# 3. runs `qtool doctor`, then `pytest -m gpu` (the TensorRT tests);
# 4. runs scripts/gpu_check.py: for the demo model and EfficientNet-Lite0 (../shared/assets, or
#    $QTOOL_ASSETS), calibrate on the GPU, quantize, build INT8 and INT8+FP16 engines, run them,
#    compare each with the ONNX Q/DQ model, and print one table (INT8 layers, top-1 agreement,
#    SQNR, latency of engine and ONNX).
#
# Exit status: 0 when every step passed, 1 otherwise; steps 3-4 taking over 8 minutes count as a
# failure (the measurements also stop any single step after 5 minutes). Installation is not
# timed: TensorRT alone downloads 1-2 GB.
# --dry-run installs nothing, uses the current Python environment ($VENV if it exists, else
# .venv), runs the GPU tests (they skip without a GPU) and the measurements up to TensorRT.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv-gpu}"
PROVIDER="${PROVIDER:-cuda}"  # onnxruntime provider for calibrate/compare (cuda, tensorrt, auto)
DRY_RUN=0
INSTALL=1

for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1; INSTALL=0 ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

LIMIT_SECONDS=480  # after installation the check must finish in under 8 minutes on one GPU
die() { echo "gpu_check: $*" >&2; exit 1; }
failed=()
run_step() {  # run_step NAME COMMAND...: run it, remember a failure, go on
  local name="$1"; shift
  echo
  echo "=== $name"
  if ! "$@"; then
    echo "=== $name FAILED" >&2
    failed+=("$name")
  fi
}

cd "$REPO" || die "cannot enter $REPO"

# 1. the driver's CUDA major -> the extra
if command -v nvidia-smi >/dev/null 2>&1; then
  CUDA_MAJOR="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n 1)"
  [ -n "$CUDA_MAJOR" ] || die "nvidia-smi gives no CUDA version: is the NVIDIA driver working?"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
elif [ "$DRY_RUN" = 1 ]; then
  CUDA_MAJOR="${QTOOL_CUDA_MAJOR:-13}"
  echo "dry run: no nvidia-smi here; assuming a CUDA $CUDA_MAJOR driver"
else
  die "nvidia-smi not found: this check needs an NVIDIA GPU and driver (--dry-run checks the rest)"
fi
case "$CUDA_MAJOR" in
  12|13) EXTRA="trt-cu$CUDA_MAJOR" ;;
  *) die "the driver supports CUDA $CUDA_MAJOR; qtool's TensorRT extras are for CUDA 12 and 13" ;;
esac
echo "driver CUDA $CUDA_MAJOR -> pip install '.[$EXTRA]'"

# 2. installation
if [ "$INSTALL" = 1 ]; then
  python3 -m venv "$VENV" || die "cannot create $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip || die "pip upgrade failed"
  "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRA,dev]" || die "pip install '.[$EXTRA,dev]' failed"
  # onnxruntime and onnxruntime-gpu provide the same module: only one may be installed
  "$VENV/bin/python" -m pip uninstall --quiet -y onnxruntime || die "pip uninstall onnxruntime failed"
  "$VENV/bin/python" -m pip install --quiet onnxruntime-gpu || die "pip install onnxruntime-gpu failed"
elif [ ! -x "$VENV/bin/python" ]; then
  VENV="$REPO/.venv"
fi
PY="$VENV/bin/python"
START=$SECONDS
[ -x "$PY" ] || die "no Python at $PY (run without --no-install, or 'make install' for --dry-run)"
echo "python: $PY"

# 3. what is installed, then the TensorRT tests
run_step "qtool doctor" "$PY" -m qtool.cli.main doctor
run_step "pytest -m gpu" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests

# 4. the measurements and the table
measure=("$PY" scripts/gpu_check.py --provider "$PROVIDER")
[ "$DRY_RUN" = 1 ] && measure+=(--dry-run)
run_step "measurements" "${measure[@]}"

elapsed=$((SECONDS - START))
echo
echo "gpu_check: ${elapsed}s after installation"
if [ "$DRY_RUN" = 0 ] && [ "$elapsed" -gt "$LIMIT_SECONDS" ]; then
  failed+=("time: ${elapsed}s, over the ${LIMIT_SECONDS}s limit")
fi
if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu_check: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: all steps passed$([ "$DRY_RUN" = 1 ] && echo ' (dry run: TensorRT steps pending a GPU)')"
