"""`qtool run`: execute a TensorRT engine over a data set and save its outputs (.npz)."""

from __future__ import annotations

import click

from qtool.cli.common import (
    apply_config,
    config_option,
    data_options,
    emit,
    json_option,
    setup_logging,
    verbosity_options,
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("engine", type=click.Path(dir_okay=False))
@data_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Outputs file (default: ENGINE stem + .outputs.npz beside the engine when that "
                   "folder is yours, else in the current folder).")
@config_option
@json_option
@verbosity_options
@click.pass_context
def run(ctx, **params):
    """Run ENGINE on data and write every output to an .npz.

    Outputs of all batches are concatenated under the output's name along the axis that holds
    the samples (axis 0, or axis 1 for a state [layers, batch, units]); when no axis does, or
    shapes differ otherwise, each batch is stored as NAME/<batch index>. A run record
    OUTPUT.json is written beside the .npz. Needs TensorRT, a CUDA binding (cuda-python or
    pycuda) and an NVIDIA GPU.
    """
    from qtool.backends.tensorrt.logger import level_for
    from qtool.backends.tensorrt.run import RunOptions, run_engine
    from qtool.cli.progress import SampleProgress
    from qtool.config import section
    from qtool.io.outputs import guard_outputs

    params, config = apply_config(ctx, params, params["config_path"], "run")
    setup_logging(params["verbose"], params["quiet"])
    # the library guards the outputs against engine and data; the config is the command's own
    guard_outputs([params["output"]], inputs=[params["config_path"]])
    options = RunOptions(
        batch_size=params["batch_size"], num_samples=params["num_samples"],
        preprocess=section(config, "preprocess"),
        inputs=section(config, "inputs"), loader_script=params["loader_script"],
        log_level=level_for(params["verbose"], params["quiet"]),
    )
    progress = SampleProgress("running", enabled=not params["quiet"])
    try:
        result = run_engine(params["engine"], params["data"], params["output"], options,
                            on_start=progress.begin, on_batch=progress.advance)
    finally:
        progress.finish()
    shapes = ", ".join(f"{name} {info['shape']} {info['dtype']}" for name, info in result.outputs.items())
    text = (f"wrote {result.output}: {result.samples} samples in {result.batches} batches ({shapes}); "
            f"TensorRT {result.tensorrt_version}, inference {result.seconds:.3f} s")
    emit(result.to_dict(), params["as_json"], text)
