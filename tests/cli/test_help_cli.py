"""Every module imports and every command's --help works with only the core dependencies."""

import subprocess
import sys
import textwrap

from qtool.cli.main import COMMANDS

BLOCKED = ("tensorrt", "cuda", "pycuda", "matplotlib")

SCRIPT = textwrap.dedent(f"""
    import importlib, pkgutil, sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError("blocked in this test: " + name)
    sys.meta_path.insert(0, Block())
    import qtool
    for info in pkgutil.walk_packages(qtool.__path__, "qtool."):
        if info.name != "qtool.__main__":
            importlib.import_module(info.name)
    from qtool.cli.main import COMMANDS, main
    for command in [[]] + [[name] for name in COMMANDS]:
        try:
            main(command + ["--help"])
        except SystemExit as exc:
            assert exc.code == 0, (command, exc.code)
    print("ok", len(COMMANDS))
""")


def test_every_module_and_help_without_optional_packages():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == f"ok {len(COMMANDS)}"
    for name in COMMANDS:
        assert f"\n  {name} " in result.stdout or f"\n  {name}\n" in result.stdout


# check's --help lists the finding codes, which come from the check package itself.
HEAVY_HELP = {"check"}


def test_help_of_the_commands_does_not_load_onnx():
    """Declaring a command's options (qtool/options.py groups) must not import the step: its
    --help stays as quick as click itself."""
    script = textwrap.dedent("""
        import sys
        from qtool.cli.main import main
        try:
            main([sys.argv[1], "--help"])
        except SystemExit:
            pass
        print("onnx" in sys.modules)
    """)
    loaded = {}
    for name in sorted(set(COMMANDS) - HEAVY_HELP):
        result = subprocess.run([sys.executable, "-c", script, name], capture_output=True,
                                text=True, timeout=60, check=False)
        loaded[name] = result.stdout.strip().splitlines()[-1]
    assert loaded == dict.fromkeys(loaded, "False")
