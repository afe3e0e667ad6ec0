"""The CI step as a library: calibrate -> quantize -> check -> compare (-> build -> compare the
engine), every option from one TOML file, every artifact in one output folder.

Config tables and their keys (the same names as the commands' options, with '_' for '-'):

    [pipeline]    model (required), output_dir, reuse_calibration (default true),
                  provider (onnxruntime's execution providers: cpu, cuda, tensorrt, auto)
    [preprocess]  image preprocessing, for calibration and comparison data alike
    [inputs.NAME] batch_axis of a model input (an axis number or "none"), for every data read
    [calibrate]   data (required), loader_script, method, bins, percentile, coverage,
                  num_samples, batch_size, bounded_max, task (default: classification when
                  [compare] is), auto_budget
    [quantize]    op_types, exclude, exclude_op_type, exclude_file, per_tensor_weights, weights,
                  conv_transpose_per_tensor, high_precision, bias_correction
    [check]       strict, ignore
    [compare]     data (required), loader_script, labels, task, logits, ctc_blank, metric_script,
                  num_samples, batch_size, min_sqnr, min_cosine, max_top1_drop, min_agreement,
                  max_flips_above_margin ("N:M"), min_metric, max_metric ("NAME=VALUE" or a
                  list of them)
    [build]       required (default false), int8 (default true), fp16, strongly_typed, shapes,
                  batch, workspace, timing_cache, builder_optimization_level
    [sensitivity] read by `qtool sensitivity --config`, not by the pipeline

Relative paths in the config resolve against the config file's folder; output_dir defaults to
out/<config name> there. Unknown tables or keys are usage errors (a typo never silently does
nothing).

Calibration reuse (qtool.calib.reuse): the calibration file records a cache key, the sha256 of
the model's sha256, the content of every data file (or the loader script's text) and the
calibration and preprocessing options. A re-run whose key matches the file in the output folder
reuses it.

Layout: config.py reads and checks the config against the steps' option groups (each step's
options are declared once, next to its library: qtool.calib.options, qtool.quantize.options,
...); steps/ holds one object per step, each with run(context) -> StepRecord; runner.py runs
them in order and records them (result.py) into summary.json.

Outcome: every step is recorded in summary.json (versions, model sha256, method, per-step time,
metrics, gates) whatever happens. Exit status: 0 when every step passed, 3 when an accuracy gate
failed, 1 when a step failed (check errors, a missing required TensorRT, bad data, ...).
"""

from __future__ import annotations

from qtool.pipeline.config import check_tables
from qtool.pipeline.result import raise_for
from qtool.pipeline.runner import run_pipeline

__all__ = ["check_tables", "raise_for", "run_pipeline"]
