"""Option declarations: one declaration gives the command's flag, the pipeline's TOML key and the
options object's default."""

import dataclasses

import click
import pytest
from click.testing import CliRunner

from qtool.analysis.compare_options import COMPARE
from qtool.backends.tensorrt.build_options import BUILD, PIPELINE_DEFAULTS, build_options
from qtool.calib.options import CALIBRATE, CalibrateOptions, calibrate_options
from qtool.cli.common import apply_config
from qtool.cli.options import click_options
from qtool.errors import UsageError
from qtool.options import FILE, Option, OptionGroup, require_positive
from qtool.pipeline import check_tables
from qtool.pipeline.config import GROUPS
from qtool.pipeline.options import PIPELINE
from qtool.quantize.check.options import CHECK
from qtool.quantize.options import QUANTIZE, QuantizeOptions, quantize_options

# The tables and key types the pipeline accepted before the declarations existed: the groups
# must accept exactly these.
ACCEPTED = {
    "pipeline": {"model": (str,), "output_dir": (str,), "reuse_calibration": (bool,),
                 "provider": (str,)},
    "calibrate": {"data": (str,), "loader_script": (str,), "method": (str,), "bins": (int,),
                  "percentile": (int, float), "coverage": (int, float), "num_samples": (int,),
                  "batch_size": (int,), "bounded_max": (bool,), "task": (str,),
                  "auto_budget": (int, float)},
    "quantize": {"op_types": (str, list), "exclude": (str, list), "exclude_op_type": (str, list),
                 "exclude_file": (str,), "per_tensor_weights": (bool,), "weights": (str,),
                 "conv_transpose_per_tensor": (bool,), "high_precision": (str,),
                 "bias_correction": (bool,)},
    "check": {"strict": (bool,), "ignore": (str, list)},
    "compare": {"data": (str,), "loader_script": (str,), "labels": (str,), "task": (str,),
                "logits": (str,), "num_samples": (int,), "batch_size": (int,),
                "min_sqnr": (int, float), "min_cosine": (int, float),
                "max_top1_drop": (int, float), "min_agreement": (int, float),
                "ctc_blank": (int,), "metric_script": (str,), "max_flips_above_margin": (str,),
                "min_metric": (str, list), "max_metric": (str, list)},
    "build": {"required": (bool,), "int8": (bool,), "fp16": (bool,), "strongly_typed": (bool,),
              "shapes": (str, list), "batch": (int,), "workspace": (int,), "timing_cache": (str,),
              "builder_optimization_level": (int,)},
}
REAL_GROUPS = [PIPELINE, CALIBRATE, QUANTIZE, CHECK, COMPARE, BUILD]


def command_for(group):
    @click.command()
    @click_options(group)
    @click.option("--config", "config_path", default=None)
    @click.pass_context
    def command(ctx, **params):
        params, _ = apply_config(ctx, params, params["config_path"], group.table)
        click.echo(repr({key: value for key, value in params.items() if key != "config_path"}))

    return command


# -- one declaration: flag, key and default together -----------------------------------------

def test_a_new_declaration_gives_its_flag_and_its_toml_key(tmp_path):
    group = OptionGroup("tryout", [Option("frames", int, 3, help="Frames to try.")])
    command = command_for(group)
    runner = CliRunner()
    assert runner.invoke(command, []).output.strip() == "{'frames': 3}"
    assert runner.invoke(command, ["--frames", "7"]).output.strip() == "{'frames': 7}"
    assert "Frames to try.  [default: 3]" in runner.invoke(command, ["--help"]).output
    config = tmp_path / "c.toml"
    config.write_text("[tryout]\nframes = 5\n")
    assert runner.invoke(command, ["--config", config]).output.strip() == "{'frames': 5}"
    assert runner.invoke(command, ["--config", config, "--frames", "9"]).output.strip() == \
        "{'frames': 9}"
    group.check_table({"frames": 5}, "c.toml")
    assert group.values({}) == {"frames": 3} and group.values({"frames": 5}) == {"frames": 5}
    with pytest.raises(UsageError, match=r"^unknown key 'frame' in \[tryout\] of c.toml "
                                         r"\(known: frames\)$"):
        group.check_table({"frame": 5}, "c.toml")
    with pytest.raises(UsageError, match=r"^\[tryout\] frames in c.toml must be an integer, "
                                         r"not '5'$"):
        group.check_table({"frames": "5"}, "c.toml")


def test_declarations_become_the_click_option_of_their_kind():
    group = OptionGroup("kinds", [
        Option("on", bool, True, help="On by default."),
        Option("off", bool, False, help="Off by default."),
        Option("pick", default="a", choices=("a", "b")),
        Option("many", multiple=True, default=()),
        Option("file", path=FILE),
        Option("level", int, minimum=0, maximum=5),
        Option("ratio", float, 0.5),
        Option("hidden", pipeline=True, command=False),
    ])
    params = {param.name: param for param in command_for(group).params}
    assert params["on"].opts == ["--on"] and params["on"].secondary_opts == ["--no-on"]
    assert params["off"].is_flag and params["off"].default is False
    assert list(params["pick"].type.choices) == ["a", "b"] and params["pick"].show_default
    assert params["many"].multiple and not params["many"].show_default
    assert isinstance(params["file"].type, click.Path) and not params["file"].type.dir_okay
    assert params["file"].opts == ["--file"]
    assert (params["level"].type.min, params["level"].type.max) == (0, 5)
    assert params["ratio"].type is click.FLOAT and params["ratio"].default == 0.5
    assert "hidden" not in params
    assert group.toml_keys() == ["on", "off", "pick", "many", "file", "level", "ratio", "hidden"]


def test_an_option_declared_twice_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        OptionGroup("twice", [Option("a"), Option("a", int)])


# -- the real groups -------------------------------------------------------------------------

@pytest.mark.parametrize("group", REAL_GROUPS, ids=lambda group: group.table)
def test_each_group_accepts_exactly_the_keys_and_types_the_pipeline_accepted(group):
    assert {option.name: option.toml_types for option in group if option.pipeline} == \
        ACCEPTED[group.table]


def test_the_pipeline_checks_every_table_with_its_group():
    assert {name: group.table for name, group in GROUPS.items()} == {name: name for name in ACCEPTED}


COMMANDS = {"calibrate": CALIBRATE, "quantize": QUANTIZE, "check": CHECK, "compare": COMPARE,
            "build": BUILD}


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_the_flags_its_group_declares(name):
    from qtool.cli.main import cli

    group = COMMANDS[name]
    command = cli.get_command(None, name)
    flags = {param.name: param.opts for param in command.params}
    for option in group.command_options():
        assert option.long_flag in flags[option.name], option.name
        assert command.params[[p.name for p in command.params].index(option.name)].default == \
            option.default
    generated = {p.name for p in command_for(group).params} - {"config_path"}
    assert generated == {option.name for option in group.command_options()}


@pytest.mark.parametrize("cls, group, not_fields", [
    (CalibrateOptions, CALIBRATE, {"data"}),            # calibrate()'s own argument
    (QuantizeOptions, QUANTIZE, {"exclude_file"}),      # read into exclude
    ("qtool.analysis.compare:CompareOptions", COMPARE,  # the gates make one Gates field
     {"data", "min_sqnr", "min_cosine", "max_top1_drop", "min_agreement",
      "max_flips_above_margin", "min_metric", "max_metric"}),
    ("qtool.backends.tensorrt.build:BuildOptions", BUILD, {"required"}),  # whether, not how
], ids=["calibrate", "quantize", "compare", "build"])
def test_the_options_objects_defaults_equal_the_declarations(cls, group, not_fields):
    if isinstance(cls, str):
        import importlib

        module, name = cls.split(":")
        cls = getattr(importlib.import_module(module), name)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(cls)}
    assert {option.name for option in group if option.attribute not in defaults} == not_fields
    for option in group:
        if option.attribute in defaults:
            default = defaults[option.attribute]
            assert (tuple(default) if option.multiple else default) == option.default, option.name


def test_calibration_defaults():
    assert CalibrateOptions().bins == 2048 and CalibrateOptions().percentile == 99.99
    assert CalibrateOptions().method == "auto"


def test_options_objects_built_from_an_empty_table_are_the_defaults(tmp_path):
    values = CALIBRATE.values({})
    assert calibrate_options(values, preprocess={}, inputs={}, provider="auto") == \
        CalibrateOptions()
    assert quantize_options(QUANTIZE.values({})) == QuantizeOptions()
    built = build_options(BUILD.values({}, PIPELINE_DEFAULTS))
    assert built.int8 is True  # the pipeline's engine is INT8 unless [build] int8 = false
    assert build_options(BUILD.values({})).int8 is False
    assert build_options(BUILD.values({"workspace": 64})).workspace_mib == 64


def test_toml_floats_become_floats_as_before():
    values = CALIBRATE.values({"percentile": 99, "auto_budget": 2, "bins": 4096})
    assert values["percentile"] == 99.0 and isinstance(values["percentile"], float)
    assert isinstance(values["auto_budget"], float) and values["bins"] == 4096


# -- the errors stay the same one-line usage errors --------------------------------------------

@pytest.mark.parametrize("config, message", [
    ({"calibrate": {"methd": "max"}},
     ("unknown key 'methd' in [calibrate] of ci.toml (known: data, loader_script, num_samples, "
      "batch_size, method, task, auto_budget, bins, percentile, coverage, bounded_max)")),
    ({"calibrate": {"bins": "many"}}, "[calibrate] bins in ci.toml must be an integer, not 'many'"),
    ({"calibrate": {"percentile": True}},
     "[calibrate] percentile in ci.toml must be a number, not True"),
    ({"quantize": {"exclude": ["a", 1]}},
     "[quantize] exclude in ci.toml must be a string or a list, not ['a', 1]"),
    ({"build": {"required": "yes"}}, "[build] required in ci.toml must be true or false, not 'yes'"),
    ({"calibrate": {"shard": "0/2"}}, "unknown key 'shard' in [calibrate] of ci.toml"),
    ({"quantise": {}}, ("unknown table [quantise] in ci.toml (known: [pipeline], [calibrate], "
                        "[quantize], [check], [compare], [build], [preprocess], [inputs], "
                        "[sensitivity], [limits])")),
    ({"check": 3}, "[check] in ci.toml must be a table"),
])
def test_pipeline_table_errors(config, message):
    with pytest.raises(UsageError) as caught:
        check_tables(config, "ci.toml")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_command_config_errors(qtool, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[quantize]\nexclud = ['x']\n")
    result = qtool("quantize", "m.onnx", "--calib", "m.calib.json", "--config", config)
    assert result.code == 2
    assert result.err.strip() == f"error: unknown key 'exclud' in [quantize] of {config}"
    config.write_text("[calibrate]\nbins = 'many'\n")
    result = qtool("calibrate", "m.onnx", "--config", config)
    assert result.code == 2
    assert result.err.strip() == \
        f"error: [calibrate] bins in {config}: 'many' is not a valid integer."


def test_the_declarations_import_no_click():
    import subprocess
    import sys

    modules = ["qtool.options", "qtool.calib.options", "qtool.quantize.options",
               "qtool.quantize.check.options", "qtool.analysis.compare_options",
               "qtool.backends.tensorrt.build_options", "qtool.pipeline.options"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('click' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_sample_counts_and_batch_sizes_must_be_positive_where_set():
    @dataclasses.dataclass
    class Counts:
        num_samples: int | None = None
        batch_size: int | None = 8

    require_positive(Counts(), ("num_samples", "batch_size"))
    with pytest.raises(UsageError, match=r"^--batch-size must be a positive integer$"):
        require_positive(Counts(batch_size=0), ("num_samples", "batch_size"))
    with pytest.raises(UsageError, match=r"^--num-samples must be a positive integer$"):
        require_positive(Counts(num_samples=-3), ("num_samples", "batch_size"))
