"""Labels: .npy, one class index a line, and '<file> <class>' lists matched to the image files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qtool.errors import QtoolError
from qtool.io.data import open_data
from qtool.io.labels import read_labels
from qtool.io.model import InputSpec

SPEC = [InputSpec("img", np.dtype(np.float32), ("N", 3, 2, 2))]


def images(folder, names):
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((2, 2, 3), i, np.uint8)).save(path)
    return open_data(folder, SPEC, preprocess={"scale": 1.0})


def arrays(folder, sizes):
    folder.mkdir(exist_ok=True)
    for i, n in enumerate(sizes):
        np.save(folder / f"{i}.npy", np.zeros((n, 3, 2, 2), np.float32))
    return folder


def test_npy_labels(tmp_path):
    np.save(tmp_path / "l.npy", np.array([3, 1, 2], np.int32))
    labels = read_labels(tmp_path / "l.npy")
    assert labels.dtype == np.int64 and labels.tolist() == [3, 1, 2]
    np.save(tmp_path / "col.npy", np.array([[4], [5]], np.uint8))
    assert read_labels(tmp_path / "col.npy").tolist() == [4, 5]


@pytest.mark.parametrize("array, message", [
    (np.array([0.0, 1.0]), "must hold integers, found float64"),
    (np.zeros((2, 2), np.int64), r"must be a 1-D array of class indices, found shape \(2, 2\)"),
])
def test_npy_labels_must_be_a_vector_of_ints(tmp_path, array, message):
    np.save(tmp_path / "l.npy", array)
    with pytest.raises(QtoolError, match=message):
        read_labels(tmp_path / "l.npy")


def test_one_index_per_line_matches_the_sample_count(tmp_path):
    data = open_data(arrays(tmp_path / "d", [2, 3]), SPEC)
    (tmp_path / "l.txt").write_text("# classes\n7\n\n8\n9\n10\n11\n")
    assert read_labels(tmp_path / "l.txt", data).tolist() == [7, 8, 9, 10, 11]
    (tmp_path / "short.txt").write_text("1\n2\n3\n")
    with pytest.raises(QtoolError, match="short.txt has 3 entries but the data has 5 samples"):
        read_labels(tmp_path / "short.txt", data)


def test_positional_labels_follow_num_samples(tmp_path):
    folder = arrays(tmp_path / "d", [2, 3])
    data = open_data(folder, SPEC, num_samples=3)
    np.save(tmp_path / "all.npy", np.arange(5))
    np.save(tmp_path / "used.npy", np.arange(3) + 10)
    np.save(tmp_path / "other.npy", np.arange(4))
    assert read_labels(tmp_path / "all.npy", data).tolist() == [0, 1, 2]
    assert read_labels(tmp_path / "used.npy", data).tolist() == [10, 11, 12]
    with pytest.raises(QtoolError, match=r"has 4 entries but the data has 5 \(3 read\) samples"):
        read_labels(tmp_path / "other.npy", data)


def test_named_labels_follow_the_data_order(tmp_path):
    data = images(tmp_path / "img", ["b.png", "a.png", "my photo.png"])
    (tmp_path / "labels.txt").write_text("my photo.png 5\nb.png 2\nunused.png 9\na.png 1\n")
    assert read_labels(tmp_path / "labels.txt", data).tolist() == [1, 2, 5]  # a, b, my photo
    # without data: file order
    assert read_labels(tmp_path / "labels.txt").tolist() == [5, 2, 9, 1]


def test_named_labels_by_relative_path_in_subfolders(tmp_path):
    data = images(tmp_path / "img", ["cat/1.png", "dog/1.png", "dog/2.png"])
    (tmp_path / "labels.txt").write_text("./dog/1.png 1\ndog/2.png 1\ncat/1.png 0\n")
    assert read_labels(tmp_path / "labels.txt", data).tolist() == [0, 1, 1]
    # bare names are ambiguous when two folders hold the same name
    (tmp_path / "bare.txt").write_text("1.png 0\n2.png 1\n")
    with pytest.raises(QtoolError, match=r"lacks 2 of the 3 data file\(s\): cat/1.png, dog/1.png; names found "
                                         r"in several folders need their folder$"):
        read_labels(tmp_path / "bare.txt", data)


def test_named_labels_cover_only_the_samples_read(tmp_path):
    folder = tmp_path / "img"
    images(folder, ["a.png", "b.png", "c.png"])
    data = open_data(folder, SPEC, preprocess={"scale": 1.0}, num_samples=2)
    (tmp_path / "labels.txt").write_text("a.png 0\nb.png 1\n")
    assert read_labels(tmp_path / "labels.txt", data).tolist() == [0, 1]


def test_named_labels_missing_files(tmp_path):
    data = images(tmp_path / "img", ["a.png", "b.png", "c.png", "d.png", "e.png"])
    (tmp_path / "labels.txt").write_text("c.png 3\n")
    with pytest.raises(QtoolError, match=r"lacks 4 of the 5 data file\(s\): a.png, b.png, d.png, \.\.\.$"):
        read_labels(tmp_path / "labels.txt", data)


def test_named_labels_need_image_data(tmp_path):
    data = open_data(arrays(tmp_path / "d", [2]), SPEC)
    (tmp_path / "labels.txt").write_text("0.npy 1\n")
    with pytest.raises(QtoolError, match=r"names files, but the data \(npy\) is not one image per file"):
        read_labels(tmp_path / "labels.txt", data)


@pytest.mark.parametrize("text, message", [
    ("a.png 1\na.png 2\n", r"a.png is listed twice \(lines 1 and 2\)"),
    ("a.png 1\n2\n", "line 2: mixes '<file> <class index>' lines with bare class indices"),
    ("1\ncat\n", r"line 2: expected '<class index>' or '<file> <class index>', got 'cat'"),
    ("a.png cat\n", "line 1: expected"),
    ("# nothing\n\n", "holds no labels"),
])
def test_label_file_mistakes(tmp_path, text, message):
    (tmp_path / "labels.txt").write_text(text)
    with pytest.raises(QtoolError, match=message):
        read_labels(tmp_path / "labels.txt")


def test_unreadable_label_files(tmp_path):
    with pytest.raises(QtoolError, match="labels file not found"):
        read_labels(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(QtoolError, match="is not UTF-8 text"):
        read_labels(tmp_path / "bin.txt")
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(QtoolError, match="bad.npy is not a readable .npy array"):
        read_labels(tmp_path / "bad.npy")


@pytest.mark.assets
def test_imagenet_labels_match_the_photos(assets_dir):
    folder = assets_dir / "imagenet200"
    data = open_data(folder, [InputSpec("input", np.dtype(np.float32), ("batch", 3, 224, 224))],
                     preprocess={"resize": 256, "crop": 224})
    labels = read_labels(folder / "labels.txt", data)
    expected = {}
    for line in (folder / "labels.txt").read_text().splitlines():
        name, index = line.rsplit(" ", 1)
        expected[name] = int(index)
    assert len(labels) == 200
    assert labels.tolist() == [expected[f.name] for f in data.sample_files()]
