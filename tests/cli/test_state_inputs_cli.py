"""A recurrent step with a state input batched on axis 1 and a scalar input, through calibrate,
quantize, compare, sensitivity and the pipeline: from batch-1 files, re-batched, and from a
loader script."""

import json
import math
import textwrap

import numpy as np
import onnxruntime as ort
import pytest

from tests.tiny_models import save, state_step, state_step_reference

SAMPLES = 12


def write_samples(folder, seed, count=SAMPLES, sr=16000):
    """One .npz per sample as a streaming model is fed: x [1,16], state [2,1,8], sr scalar."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        sample = {"x": rng.normal(size=(1, 16)).astype(np.float32),
                  "state": rng.normal(size=(2, 1, 8)).astype(np.float32),
                  "sr": np.array(sr, np.int64)}
        np.savez(folder / f"{i:03d}.npz", **sample)
        samples.append(sample)
    return samples


LOADER = """
    from pathlib import Path
    import numpy as np

    def load_data():
        for path in sorted((Path(__file__).parent / "{folder}").glob("*.npz")):
            with np.load(path) as data:
                yield {{name: data[name] for name in ("x", "state", "sr")}}
"""


@pytest.fixture
def state_setup(tmp_path):
    model = tmp_path / "step.onnx"
    save(state_step(), model)
    calib_samples = write_samples(tmp_path / "calib", seed=1)
    eval_samples = write_samples(tmp_path / "eval", seed=2)
    for name in ("calib", "eval"):
        (tmp_path / f"load_{name}.py").write_text(textwrap.dedent(LOADER.format(folder=name)))
    return tmp_path, model, calib_samples, eval_samples


def sqnr_db(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    ref = np.concatenate([r.ravel() for r in reference]).astype(np.float64)
    cand = np.concatenate([c.ravel() for c in candidate]).astype(np.float64)
    return 10 * math.log10(np.sum(ref * ref) / np.sum((ref - cand) ** 2))


def test_calibrate_quantize_compare_with_batch_1_files_and_a_loader_script(qtool, state_setup):
    tmp, model, _, eval_samples = state_setup
    calib, int8 = tmp / "step.calib.json", tmp / "step.int8.onnx"
    result = qtool("calibrate", model, "--data", tmp / "calib", "-o", calib, "--json", "-q")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert (summary["samples"], summary["batches"]) == (SAMPLES, SAMPLES)
    from_files = json.loads(calib.read_text())

    # the same samples from a loader script give the very same calibration
    scripted = tmp / "scripted.calib.json"
    result = qtool("calibrate", model, "--data-loader-script", tmp / "load_calib.py", "-o",
                   scripted, "-q")
    assert result.code == 0, result.err
    from_script = json.loads(scripted.read_text())
    assert {name: t["amax"] for name, t in from_script["tensors"].items()} == \
        {name: t["amax"] for name, t in from_files["tensors"].items()}
    assert set(from_files["tensors"]) == {"x", "z"}  # both MatMul inputs
    assert [(i["name"], i["shape"], i["batch_axis"]) for i in from_files["model"]["inputs"]] == [
        ("x", ["batch", 16], 0), ("state", [2, "batch", 8], 1), ("sr", [], None)]

    result = qtool("quantize", model, "--calib", calib, "-o", int8)
    assert result.code == 0, result.err

    # compare's SQNR against the numpy reference step and onnxruntime's INT8 run, sample by sample
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    expected = {}
    for index, name in enumerate(("out", "new_state")):
        reference = [state_step_reference(s["x"], s["state"], s["sr"])[index] for s in eval_samples]
        candidate = [session.run([name], s)[0] for s in eval_samples]
        expected[name] = sqnr_db(reference, candidate)
    runs = {"files": ["--data", tmp / "eval"],
            "files in batches of 5": ["--data", tmp / "eval", "--batch-size", 5],
            "loader script": ["--data-loader-script", tmp / "load_eval.py"],
            "loader script in batches of 4": ["--data-loader-script", tmp / "load_eval.py",
                                              "--batch-size", 4]}
    batch_counts = {}
    for label, args in runs.items():
        result = qtool("compare", model, int8, *args, "--json", "-q")
        assert result.code == 0, (label, result.err)
        compared = json.loads(result.out)
        assert compared["samples"] == SAMPLES, label
        batch_counts[label] = compared["batches"]
        for name, value in expected.items():
            assert compared["outputs"][name]["sqnr_db"] == pytest.approx(value, abs=1e-3), label
    assert batch_counts == {"files": 12, "files in batches of 5": 3, "loader script": 12,
                            "loader script in batches of 4": 3}


def test_sensitivity_ranks_the_state_models_layers(qtool, state_setup):
    tmp, model, _, _ = state_setup
    calib = tmp / "step.calib.json"
    assert qtool("calibrate", model, "--data", tmp / "calib", "-o", calib, "-q").code == 0
    result = qtool("sensitivity", model, "--calib", calib, "--data", tmp / "eval", "--json",
                   "-o", tmp / "sens.json")
    assert result.code == 0, result.err
    ranked = json.loads((tmp / "sens.json").read_text())
    assert ranked["samples"] == SAMPLES
    assert sorted(layer["node"] for layer in ranked["ranking"]) == ["in_proj", "out_proj"]


def test_joined_samples_must_agree_on_the_scalar(qtool, tmp_path):
    model = tmp_path / "step.onnx"
    save(state_step(), model)
    write_samples(tmp_path / "data", seed=1, count=2)
    np.savez(tmp_path / "data" / "002.npz", x=np.zeros((1, 16), np.float32),
             state=np.zeros((2, 1, 8), np.float32), sr=np.array(8000, np.int64))
    result = qtool("calibrate", model, "--data", tmp_path / "data", "--batch-size", 4, "-q")
    assert result.code == 1
    data = tmp_path / "data"
    assert result.err == (f"error: cannot batch {data / '000.npz'} with {data / '002.npz'}: "
                          f"input 'sr' is not batched and has a different value in each; give "
                          f"whole batches (leave the batch size unset), or set its batch axis "
                          f"with [inputs.sr] batch_axis in the config\n")
    assert not (tmp_path / "step.calib.json").exists()


def test_config_sets_the_batch_axis_of_an_unnamed_model(qtool, tmp_path):
    model = tmp_path / "step.onnx"
    save(state_step(batch=None), model)  # no dimension names: axis 0 is assumed everywhere
    write_samples(tmp_path / "calib", seed=1)
    result = qtool("calibrate", model, "--data", tmp_path / "calib", "-q")
    assert result.code == 1
    assert result.err == (f"error: {tmp_path / 'calib' / '000.npz'}: the inputs hold different "
                          f"numbers of samples (x 1 on axis 0, state 2 on axis 0); if an input "
                          f"is not batched or keeps its samples on another axis, set "
                          f"[inputs.NAME] batch_axis in the config\n")
    config = tmp_path / "qtool.toml"
    config.write_text("[inputs.state]\nbatch_axis = 1\n")
    result = qtool("calibrate", model, "--data", tmp_path / "calib", "--config", config,
                   "--batch-size", 6, "--json", "-q")
    assert result.code == 0, result.err
    assert json.loads(result.out)["batches"] == 2
    config.write_text("[inputs.state]\nbatch_axis = 3\n")
    result = qtool("calibrate", model, "--data", tmp_path / "calib", "--config", config, "-q")
    assert result.code == 1
    assert result.err == "error: [inputs.state] batch_axis = 3 is outside input 'state' [2,?,8] (rank 3)\n"


def test_pipeline_reads_the_inputs_table(qtool, tmp_path):
    model = tmp_path / "step.onnx"
    save(state_step(batch=None), model)
    write_samples(tmp_path / "calib", seed=1)
    write_samples(tmp_path / "eval", seed=2)
    config = tmp_path / "ci.toml"
    config.write_text(textwrap.dedent("""
        [pipeline]
        model = "step.onnx"
        output_dir = "out"

        [inputs.state]
        batch_axis = 1

        [calibrate]
        data = "calib"
        batch_size = 4

        [compare]
        data = "eval"
        batch_size = 4
        min_sqnr = 10.0
    """))
    result = qtool("pipeline", config)
    assert result.code == 0, result.err + result.out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    compare = summary["steps"]["compare"]
    assert compare["status"] == "ok" and compare["passed"] is True
    assert compare["samples"] == SAMPLES
    assert summary["steps"]["calibrate"]["samples"] == SAMPLES


def test_images_without_preprocess_are_one_error_line(qtool, tmp_path):
    from PIL import Image

    from tests.tiny_models import conv_relu_gemm

    model = tmp_path / "m.onnx"
    save(conv_relu_gemm(), model)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(tmp_path / "imgs" / "a.jpg")
    result = qtool("calibrate", model, "--data", tmp_path / "imgs", "-q")
    assert result.code == 1
    assert result.err == (f"error: {tmp_path / 'imgs'} holds images but no [preprocess] table "
                          f"is configured, and input 'x' expects float32 [N,2,6,6] (NCHW, 6x6): "
                          f"add a [preprocess] table (resize, crop, scale, mean, std, layout) to "
                          f"the --config file; see \"Input data\" in the README\n")


def test_help_states_the_default_file_batch(qtool):
    from qtool.io.data import FILE_BATCH_SIZE

    for command in ("calibrate", "compare", "sensitivity", "run"):
        result = qtool(command, "--help")
        assert result.code == 0
        assert f"files cut into batches of {FILE_BATCH_SIZE})" in " ".join(result.out.split())
