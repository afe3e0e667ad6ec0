"""The benchmark as Markdown: per-model tables of time, memory and accuracy, the sample-count
sweep, the machine it ran on, and the generated part of BENCHMARKS.md."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The runs, in the order the tables list them.
TOOLS = ("qtool entropy", "qtool max", "ORT Entropy", "ORT Percentile", "ORT MinMax")
INFER = "FP32 inference"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


# ---------------------------------------------------------------------------- tables

METRIC_COLUMNS = {
    "classify": [("top1", "top-1 held-out", "pct"), ("agree", "agree held-out", "pct"),
                 ("agree_all", "agree all", "pct")],
    "detect": [("sqnr", "SQNR dB", "db"), ("cosine", "cosine", "cos"),
               ("mask_iou", "mask IoU", "pct")],
    "recognize": [("sqnr", "SQNR dB", "db"), ("cosine", "cosine", "cos"),
                  ("text_agree", "same text", "pct")],
    "direction": [("sqnr", "SQNR dB", "db"), ("cosine", "cosine", "cos"),
                  ("agree", "agree", "pct")],
}


def fmt_metric(value, kind: str) -> str:
    if value is None:
        return ""
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "db":
        return "inf" if math.isinf(value) else f"{value:.1f}"
    return f"{value:.4f}"


TIME_HEADER = ["wall s", "x inference", "CPU s", "CPU x inf", "calibrate step x inf (wall, CPU)",
               "peak RSS MiB"]


def time_cells(row: dict) -> list[str]:
    """The TIME_HEADER cells of one run."""
    if row["status"] == "skipped":
        return ["skipped", "", "", "", "", ""]
    rss = f"{row['peak_rss_mb']:.0f}"
    if row["status"] != "ok":
        return [f"{row['status']} after {row['seconds']:.0f} s", "", "", "", "", rss]
    def ratio(key):
        return f"{row[key]:.2f}x" if key in row else ""
    step = (f"{row['calib_ratio']:.2f}x, {row['calib_cpu_ratio']:.2f}x"
            if "calib_ratio" in row else "")
    return [f"{row['seconds']:.1f}", ratio("ratio"), f"{row['cpu_seconds']:.1f}",
            ratio("cpu_ratio"), step, rss]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def case_table(task: str, rows: dict[str, dict], metrics: dict) -> str:
    columns = METRIC_COLUMNS[task]
    header = ["run", *TIME_HEADER] + [c[1] for c in columns]
    body = []
    scores = metrics.get("metrics", {})
    for name, row in rows.items():
        values = scores.get("fp32" if name == INFER else name, {})
        body.append([name, *time_cells(row)] + [fmt_metric(values.get(key), kind)
                                                 for key, _, kind in columns])
    return markdown_table(header, body)


def sweep_table(sweep: dict[int, dict[str, dict]]) -> str:
    """One row per run and sample count, grouped by run."""
    body = []
    for name in [INFER, *TOOLS]:
        for count in sorted(sweep):
            if name in sweep[count]:
                body.append([name, str(count), *time_cells(sweep[count][name])])
    return markdown_table(["run", "samples", *TIME_HEADER], body)


# ---------------------------------------------------------------------------- report

def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, IndexError, ValueError):
        pass
    from importlib import metadata

    versions = ", ".join(f"{name} {metadata.version(name)}"
                         for name in ("onnxruntime", "onnx", "numpy", "pillow"))
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, {versions}; qtool at commit {commit}")


def render(report: dict) -> str:
    header = (f"Command: `{report['command']}` ({report['minutes']:.1f} minutes in all). "
              f"Batch size {report['batch_size']} for every run; limits per run: "
              f"{report['timeout']:.0f} s wall, {report['mem_limit_gb']:g} GiB resident.")
    load = report.get("load")
    if load:
        header += (f" Load average (1 min) before and after: {load[0]:.2f}, {load[1]:.2f} "
                   f"(other processes on the machine add noise to the times).")
    lines = [f"Measured {report['date']} on: {report['machine']}.", "", header, ""]
    for entry in report["cases"]:
        about = (f"`{entry['model']}`, {entry['calib_samples']} calibration samples; "
                 f"{entry['describe']}.")
        lines += [f"### {entry['title']}", "", about, ""]
        if "error" in entry["metrics"]:
            lines += [f"Evaluation failed: {entry['metrics']['error']}", ""]
        lines += [case_table(entry["task"], entry["rows"], entry["metrics"]), ""]
    sweep_note = ("Same runs on calibration sets of growing size (the samples repeated in order "
                  "beyond what is on disk); a tool that ran out of time or memory at a smaller "
                  "count is skipped at larger ones.")
    for key, sweep in report["sweeps"].items():
        table = sweep_table({int(n): rows for n, rows in sweep.items()})
        lines += [f"### Sample-count sweep: {key}", "", sweep_note, "", table, ""]
    return "\n".join(lines)


def write_markdown(path: Path, generated: str, markers: tuple[str, str] = (BEGIN, END),
                   heading: str = "") -> None:
    """Replace the generated part of BENCHMARKS.md between `markers`, keeping the hand-written
    text around it; a file without them gets `heading` and the part appended."""
    begin, end = markers
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    block = f"{begin}\n{generated}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + heading + block + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
