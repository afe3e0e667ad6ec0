import numpy as np
import pytest

from qtool.calib.trtcache import cache_amax, format_cache, read_cache, version_number, write_cache
from qtool.errors import QtoolError


def test_version_numbers_follow_tensorrt_encoding():
    assert version_number("8.6.1") == 8601
    assert version_number("10.3.0") == 100300
    assert version_number("11.4") == 110400
    with pytest.raises(QtoolError):
        version_number("ten")


def test_scale_is_big_endian_float32_hex():
    text = format_cache({"x": 127.0})  # scale 1.0 -> 0x3f800000
    assert text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert text.splitlines()[1] == "x: 3f800000"


def test_cache_round_trips_bit_exactly(tmp_path):
    rng = np.random.default_rng(0)
    scales = rng.uniform(1e-6, 10, size=500).astype(np.float32)
    lines = ["TRT-8601-EntropyCalibration2"] + [
        f"t{i}: {np.array(scale, '>f4').tobytes().hex()}" for i, scale in enumerate(scales)
    ]
    original = tmp_path / "orig.cache"
    original.write_text("\n".join(lines) + "\n")
    _, read = read_cache(original)
    amax = cache_amax(read)
    again = tmp_path / "again.cache"
    write_cache(again, amax, "8.6.1")
    assert again.read_bytes() == original.read_bytes()


@pytest.mark.parametrize("content", [
    "", "hello\n", "TRT-8601-EntropyCalibration2\nx 3f800000\n",
    "TRT-8601-EntropyCalibration2\nx: 7fc00000\n",  # NaN scale
    "TRT-8601-EntropyCalibration2\nx: 00000000\n",  # zero scale
])
def test_malformed_caches_are_refused(tmp_path, content):
    path = tmp_path / "bad.cache"
    path.write_text(content)
    with pytest.raises(QtoolError):
        read_cache(path)
