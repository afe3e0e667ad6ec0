"""Image folders: decoding, preprocessing numerics, layout, batching and refusal of bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qtool.errors import QtoolError
from qtool.io.data import open_data
from qtool.io.images import crop_box, image_preprocess, load_image, resized_size
from qtool.io.model import InputSpec

F32 = np.dtype(np.float32)
DYN = [InputSpec("img", F32, ("N", 3, "H", "W"))]
NHWC = [InputSpec("img", F32, ("N", "H", "W", 3))]
RAW = {"scale": 1.0}  # a [preprocess] table that keeps the pixels as they are


def rgb(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(path, pixels, mode=None):
    Image.fromarray(pixels, mode).save(path)
    return path


def reference(pixels, scale, mean, std, layout="NCHW", bgr=False):
    """Slow per-element loop: x = (pixel * scale - mean[c]) / std[c] in float32."""
    h, w, c = pixels.shape
    out = np.zeros((h, w, c), np.float32)
    for y in range(h):
        for x in range(w):
            for k in range(c):
                src = c - 1 - k if bgr else k
                value = np.float32(pixels[y, x, src]) * np.float32(scale)
                out[y, x, k] = (value - np.float32(mean[k])) / np.float32(std[k])
    return out.transpose(2, 0, 1) if layout == "NCHW" else out


def only(source):
    (feed,) = list(source)
    return feed


def test_normalisation_is_exact_nchw(tmp_path):
    pixels = rgb(5, 7)
    save(tmp_path / "a.png", pixels)
    pre = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    feed = only(open_data(tmp_path, DYN, preprocess=pre))
    want = reference(pixels, 1 / 255, pre["mean"], pre["std"])
    assert feed["img"].dtype == np.float32 and feed["img"].shape == (1, 3, 5, 7)
    np.testing.assert_array_equal(feed["img"][0], want)


def test_bgr_nhwc_with_channel_means(tmp_path):
    pixels = rgb(4, 6, seed=1)
    save(tmp_path / "a.png", pixels)
    spec = NHWC
    pre = {"color": "bgr", "mean": [103.5, 116.25, 123.75], "std": 2}
    feed = only(open_data(tmp_path / "a.png", spec, preprocess=pre))
    assert feed["img"].shape == (1, 4, 6, 3)  # layout found from the channel axis
    np.testing.assert_array_equal(feed["img"][0], reference(pixels, 1.0, pre["mean"], [2, 2, 2],
                                                           layout="NHWC", bgr=True))


def test_centre_crop_rounds_half_to_even(tmp_path):
    pixels = rgb(7, 10, seed=2)
    save(tmp_path / "a.png", pixels)
    feed = only(open_data(tmp_path, NHWC, preprocess={"crop": [4, 5]}))
    # top = round((7 - 4) / 2) = round(1.5) = 2, left = round((10 - 5) / 2) = round(2.5) = 2
    np.testing.assert_array_equal(feed["img"][0], pixels[2:6, 2:7].astype(np.float32))
    assert crop_box(10, 7, (4, 5)) == (2, 2, 7, 6)
    assert crop_box(11, 9, (4, 4)) == (4, 2, 8, 6)  # round(3.5) = 4, round(2.5) = 2


def test_resize_shorter_side_keeps_aspect_and_truncates():
    assert resized_size(40, 30, 20) == (26, 20)   # int(20 * 40 / 30) = 26
    assert resized_size(30, 40, 20) == (20, 26)
    assert resized_size(500, 375, 256) == (341, 256)
    assert resized_size(50, 50, 7) == (7, 7)
    assert resized_size(50, 20, (8, 9)) == (9, 8)  # [h, w] -> (w, h)


def test_nearest_resize_picks_the_expected_pixels(tmp_path):
    pixels = rgb(4, 4, seed=3)
    save(tmp_path / "a.png", pixels)
    pre = {"resize": [2, 2], "resize_filter": "nearest"}
    feed = only(open_data(tmp_path, NHWC, preprocess=pre))
    # nearest samples the source at (i + 0.5) * 2 = 1, 3
    np.testing.assert_array_equal(feed["img"][0], pixels[1::2, 1::2].astype(np.float32))


@pytest.mark.parametrize("resize_filter, pil_filter", [
    ("bilinear", Image.Resampling.BILINEAR), ("bicubic", Image.Resampling.BICUBIC),
    ("lanczos", Image.Resampling.LANCZOS),
])
def test_resize_then_crop_matches_pillow(tmp_path, resize_filter, pil_filter):
    pixels = rgb(30, 40, seed=4)
    save(tmp_path / "a.png", pixels)
    pre = {"resize": 20, "resize_filter": resize_filter, "crop": 16}
    feed = only(open_data(tmp_path, NHWC, preprocess=pre))
    resized = Image.fromarray(pixels).resize((26, 20), resample=pil_filter)
    want = np.asarray(resized)[2:18, 5:21].astype(np.float32)
    np.testing.assert_array_equal(feed["img"][0], want)


def test_static_height_width_without_resize_or_crop_resizes_to_them(tmp_path):
    save(tmp_path / "a.png", rgb(9, 13))
    spec = [InputSpec("img", F32, ("N", 3, 6, 8))]
    feed = only(open_data(tmp_path, spec, preprocess=RAW))
    want = np.asarray(Image.fromarray(rgb(9, 13)).resize((8, 6), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(feed["img"][0], want.transpose(2, 0, 1).astype(np.float32))


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    save(tmp_path / "g.png", gray, "L")
    rgba = np.dstack([rgb(3, 4, seed=5), np.full((3, 4), 7, np.uint8)])
    save(tmp_path / "r.png", rgba, "RGBA")
    g, r = list(open_data(tmp_path, NHWC, preprocess=RAW))
    np.testing.assert_array_equal(g["img"][0], np.repeat(gray[:, :, None], 3, axis=2).astype(np.float32))
    np.testing.assert_array_equal(r["img"][0], rgba[:, :, :3].astype(np.float32))  # alpha dropped


def test_one_channel_input_defaults_to_gray(tmp_path):
    pixels = rgb(3, 3, seed=6)
    save(tmp_path / "a.png", pixels)
    spec = [InputSpec("img", F32, (1, 1, 3, 3))]
    feed = only(open_data(tmp_path, spec, preprocess=RAW))
    want = np.asarray(Image.fromarray(pixels).convert("L")).astype(np.float32)
    np.testing.assert_array_equal(feed["img"], want[None, None])


def test_uint8_input_gets_rounded_clipped_pixels(tmp_path):
    pixels = np.array([[[0, 100, 255], [3, 4, 5]]], np.uint8)
    save(tmp_path / "a.png", pixels)
    spec = [InputSpec("img", np.dtype(np.uint8), ("N", "H", "W", 3))]
    feed = only(open_data(tmp_path, spec, preprocess={"scale": 1.005, "mean": 1.5}))
    # 0 -> -1.5 -> clipped 0; 100 -> 99 (100.5 - 1.5); 255 -> 254.775 -> 255; 3 -> 1.515 -> 2
    assert feed["img"].dtype == np.uint8
    assert feed["img"][0].tolist() == [[[0, 99, 255], [2, 3, 4]]]


def test_batches_case_insensitive_suffixes_in_sorted_order(tmp_path):
    names = ["c.PNG", "a.png", "b.Jpeg", "d.bmp", "e.JPG"]
    for i, name in enumerate(names):
        save(tmp_path / name, np.full((4, 4, 3), 40 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_data(tmp_path, DYN, preprocess=RAW, batch_size=2)
    assert [f.name for f in source.sample_files()] == ["a.png", "b.Jpeg", "c.PNG", "d.bmp", "e.JPG"]
    out = list(source)
    assert [feed["img"].shape[0] for feed in out] == [2, 2, 1]
    assert (source.num_samples, source.num_batches, source.batch_size) == (5, 3, 2)
    firsts = np.concatenate([feed["img"][:, 0, 0, 0] for feed in out]).tolist()
    # JPEG is lossy: only the lossless formats are compared exactly
    assert [firsts[0], firsts[2], firsts[3]] == [40.0, 0.0, 120.0]
    for feed, files in zip(out, [source.sample_files()[0:2], source.sample_files()[2:4], source.sample_files()[4:]]):
        pre = image_preprocess(None, DYN[0])
        np.testing.assert_array_equal(feed["img"], np.stack([load_image(f, pre) for f in files]))


def test_images_of_different_size_cannot_share_a_batch(tmp_path):
    save(tmp_path / "a.png", rgb(4, 4))
    save(tmp_path / "b.png", rgb(4, 5))
    assert [f["img"].shape for f in open_data(tmp_path, DYN, preprocess=RAW)] == [(1, 3, 4, 4), (1, 3, 4, 5)]
    with pytest.raises(QtoolError, match=r"cannot batch .*a.png with .*b.png"):
        list(open_data(tmp_path, DYN, preprocess=RAW, batch_size=2))


def test_image_size_not_fitting_a_static_input_gives_a_hint(tmp_path):
    save(tmp_path / "a.png", rgb(10, 20))
    spec = [InputSpec("img", F32, ("N", 3, 5, 5))]
    source = open_data(tmp_path, spec, preprocess={"resize": 5})
    with pytest.raises(QtoolError, match=r"a.png: input 'img' axis 3 expects 5, found 10 .*; set "
                                         r"\[preprocess\] crop, or resize = \[height, width\]"):
        list(source)


@pytest.mark.parametrize("pre, message", [
    ({"rezise": 256, "mean": 0}, r"unknown \[preprocess\] key rezise \(known: resize, resize_filter"),
    ({"resize": 0}, r"resize must be a positive int or \[height, width\], got 0"),
    ({"crop": [1, 2, 3]}, r"crop must be a positive int or \[height, width\]"),
    ({"resize_filter": "cubic"}, "resize_filter must be one of nearest, bilinear, bicubic, lanczos"),
    ({"color": "RGBA"}, "color must be one of RGB, BGR, GRAY"),
    ({"layout": "CHW"}, "layout must be one of NCHW, NHWC"),
    ({"scale": 0}, "scale must be a positive number"),
    ({"std": [1, 0, 1]}, "std must be positive"),
    ({"mean": "imagenet"}, "mean must be a number or a list of numbers"),
    ({"mean": [1, 2]}, r"mean has 2 values; RGB images have 3 channel\(s\)"),
    ({"dtype": "float16"}, r"dtype float16 differs from input 'img' float32"),
    ({"dtype": "object"}, "dtype must be a numeric type name"),
    ({"crop": 300, "resize": 256}, "crop 300x300 is larger than the resized shorter side 256"),
    ({"crop": 200}, r"preprocessing gives 200x200 images but input 'img' \[N,3,224,224\] expects 224x224"),
    ({"color": "GRAY"}, r"has 3 channel\(s\) on axis 1 \(NCHW\) but color GRAY gives 1"),
])
def test_preprocess_mistakes(tmp_path, pre, message):
    save(tmp_path / "a.png", rgb(4, 4))
    spec = [InputSpec("img", F32, ("N", 3, 224, 224))]
    with pytest.raises(QtoolError, match=message):
        open_data(tmp_path, spec, preprocess=pre)


def test_image_data_needs_one_4d_input(tmp_path):
    save(tmp_path / "a.png", rgb(4, 4))
    with pytest.raises(QtoolError, match=r"image data feeds one input but the model has 2 \(a, b\)"):
        open_data(tmp_path, [InputSpec("a", F32, ("N", 3, 4, 4)), InputSpec("b", F32, ("N", 3, 4, 4))])
    with pytest.raises(QtoolError, match=r"needs a 4-D model input .* input 'a' is \[N,16\]"):
        open_data(tmp_path, [InputSpec("a", F32, ("N", 16))])


def test_crop_larger_than_an_image(tmp_path):
    save(tmp_path / "small.png", rgb(3, 3))
    with pytest.raises(QtoolError, match=r"small.png: crop 4x4 is larger than the image \(3x3 after resize\)"):
        list(open_data(tmp_path, DYN, preprocess={"crop": 4}))


def test_unreadable_images_name_the_file(tmp_path):
    (tmp_path / "fake.jpg").write_bytes(b"this is not a jpeg")
    source = open_data(tmp_path, DYN, preprocess=RAW)
    with pytest.raises(QtoolError, match=r"cannot read image .*fake.jpg"):
        list(source)


def test_truncated_jpeg_is_refused(tmp_path):
    save(tmp_path / "a.jpg", rgb(64, 64))
    raw = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(QtoolError, match=r"cannot read image .*a.jpg: image file is truncated"):
        list(open_data(tmp_path, DYN, preprocess=RAW))


def test_sixteen_bit_images_are_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 60000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(QtoolError, match=r"deep.png: I;16 images \(16-bit or float\) are not supported"):
        list(open_data(tmp_path, DYN, preprocess=RAW))


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    import qtool.io.data  # noqa: F401  importing the readers must not lift Pillow's limit

    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 0
    save(tmp_path / "big.png", rgb(20, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(QtoolError, match=r"big.png: .*decompression-bomb"):
        list(open_data(tmp_path, DYN, preprocess=RAW))


def test_errors_from_decoding_threads_come_in_file_order(tmp_path):
    for i in range(8):
        save(tmp_path / f"{i}.png", rgb(4, 4, seed=i))
    (tmp_path / "5.png").write_bytes(b"broken")
    seen = []
    with pytest.raises(QtoolError, match="5.png"):
        for feed in open_data(tmp_path, DYN, preprocess=RAW):
            seen.append(feed)  # noqa: PERF402 (items seen before the error)
    assert len(seen) == 5


# -- real photos --------------------------------------------------------------------------------

EFFICIENTNET = {"resize": 256, "resize_filter": "bicubic", "crop": 224, "mean": 127, "std": 128,
                "layout": "NCHW"}


@pytest.mark.assets
def test_imagenet_photos_with_efficientnet_preprocessing(assets_dir):
    folder = assets_dir / "imagenet200"
    spec = [InputSpec("input", F32, ("batch", 3, 224, 224))]
    source = open_data(folder, spec, preprocess=EFFICIENTNET, batch_size=8)
    assert (source.num_samples, source.num_batches) == (200, 25)
    out = list(source)
    assert [feed["input"].shape for feed in out] == [(8, 3, 224, 224)] * 25
    x = np.concatenate([feed["input"] for feed in out])
    assert x.dtype == np.float32
    assert x.min() >= -127 / 128 and x.max() <= 128 / 128
    # The first photo by hand: bicubic shorter side 256, centre 224, (p - 127) / 128, CHW.
    first = source.sample_files()[0]
    with Image.open(first) as img:
        img = img.convert("RGB")
        w, h = img.size
        size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        img = img.resize(size, Image.Resampling.BICUBIC)
        left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
        pixels = np.asarray(img.crop((left, top, left + 224, top + 224))).astype(np.float32)
    np.testing.assert_array_equal(x[0], ((pixels - 127) / 128).transpose(2, 0, 1))


@pytest.mark.assets
def test_efficientnet_top1_on_the_photos(assets_dir):
    """End to end through the real model: a swapped channel order (0.795 here) or the wrong
    normalisation (0.815 with torchvision's mean/std) falls clearly below the bar."""
    ort = pytest.importorskip("onnxruntime")
    from qtool.io.labels import read_labels

    model = assets_dir / "efficientnet_lite0.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    spec = [InputSpec("input", F32, ("batch", 3, 224, 224))]
    source = open_data(assets_dir / "imagenet200", spec, preprocess=EFFICIENTNET, batch_size=25)
    labels = read_labels(assets_dir / "imagenet200" / "labels.txt", source)
    predicted = np.concatenate([session.run(None, feed)[0].argmax(axis=1) for feed in source])
    assert len(predicted) == len(labels) == 200
    assert (predicted == labels).mean() >= 0.87
