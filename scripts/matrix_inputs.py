"""The accuracy matrix's input data: splits written as one .npz per sample, and the samples of
each kind of model (ImageNet photos, detector inputs, text lines, file bytes, speech chunks)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import bench_data
import numpy as np
from matrix_sources import ASSETS


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
