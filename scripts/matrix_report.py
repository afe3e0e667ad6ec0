"""The accuracy matrix as Markdown: one table per model, the summary across models, and the
section of BENCHMARKS.md between the matrix markers."""

from __future__ import annotations

import re
from pathlib import Path

from bench_report import markdown_table, write_markdown

BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def metric_cell(result: dict, kind: str) -> str:
    if "metric" not in result:
        return ""
    text = f"{result['metric']:.4f}" if kind == "embed" else pct(result["metric"])
    if kind == "ctc":
        text += f" (CER {100 * result['cer']:.1f}%)"
    if "top1" in result:
        text += f" (top-1 {pct(result['top1'])}, {result['confident_flips']} confident flips)"
    return text


def status_cell(result: dict) -> str:
    if result["status"] == "ok":
        return "ok"
    reason = result.get("reason", "").removeprefix("error: ")
    return f"{result['status']}: {reason}".replace("|", "/")[:160]


def model_table(entry: dict) -> str:
    name = METRIC_NAMES[entry["kind"]]
    body = []
    for row, result in entry["rows"].items():
        sqnr = result.get("mean_sqnr_db")
        body.append([row, metric_cell(result, entry["kind"]),
                     "" if sqnr is None else f"{sqnr:.1f}", f"{result['seconds']:.1f}",
                     f"{result['peak_rss_mb']:.0f}", status_cell(result)])
    return markdown_table(["row", name, "mean SQNR dB", "seconds", "peak MiB", "status"], body)


METRIC_NAMES = {"classify": "top-1 agree", "ctc": "same text", "db": "box F1",
                "yolo": "box F1", "embed": "cosine", "vad": "speech agree"}
SHORT_STATUS = {"error": "error", "timeout": "timeout", "OOM": "OOM", "broken": "BROKEN",
                "eval error": "eval error"}


def summary_cell(result: dict | None, kind: str) -> str:
    if result is None:
        return ""
    if result["status"] == "ok":
        value = result.get("metric")
        if "name" not in result:
            return "no eval"  # the evaluation of the whole model failed
        return f"{value:.4f}" if kind == "embed" and value is not None else pct(value)
    if result["status"] == "broken" and "metric" in result:
        return f"BROKEN {pct(result['metric'])}"
    return SHORT_STATUS.get(result["status"], result["status"])


def summary_table(report: dict) -> str:
    rows = report["rows"]
    body = []
    for entry in report["models"]:
        metric = METRIC_NAMES[entry["kind"]]
        cells = [summary_cell(entry["rows"].get(r), entry["kind"]) for r in rows]
        if "error" in entry and not entry["rows"]:
            cells = ["error"] * len(rows)
        body.append([entry["key"], metric, *cells])
    return markdown_table(["model", "metric", *rows], body)


def write_matrix_markdown(path: Path, generated: str) -> None:
    """Replace the text between the matrix markers, keeping the rest of the file."""
    write_markdown(path, generated, (BEGIN, END), "## Real-model accuracy matrix\n\n")


def render(report: dict) -> str:
    machine = report["machine"]
    if report.get("qtool_commit"):  # the tree's HEAD is not what ran
        machine = re.sub(r"qtool at commit \w+", f"qtool at commit {report['qtool_commit'][:7]}",
                         machine)
    lines = [f"Measured {report['date']} on: {machine}.", "",
             (f"Command: `{report['command']}` ({report['minutes']:.1f} minutes in all); "
             f"{report['calib_samples']} calibration / {report['eval_samples']} evaluation "
             f"samples per model at most; limits per run {report['timeout']:.0f} s, "
             f"{report['mem_limit_gb']:g} GiB. ModelOpt {report.get('modelopt', 'n/a')}."
             + (" Load average (1 min) before and after: {:.2f}, {:.2f} (other processes on "
                "the machine slow the times).".format(*report["load"]) if "load" in report
                else "")), "",
             ("Task metric of every INT8 model against FP32 on the evaluation split (refused: "
             "the tool declined the model; error: it failed; BROKEN: it wrote a model whose "
             "outputs are NaN, all zero or constant):"), "",
             summary_table(report), ""]
    for entry in report["models"]:
        lines += [f"#### {entry['title']}", ""]
        about = entry["about"]
        if "calib_samples" in entry:
            about = (f"`{entry['model']}`, {entry['calib_samples']} calibration / "
                     f"{entry['eval_samples']} evaluation samples, batch {entry['batch_size'] or 1}; "
                     + about)
        if entry.get("fp32", {}).get("top1") is not None:
            about += f"; FP32 top-1 vs labels {pct(entry['fp32']['top1'])}"
        lines += [about + ".", ""]
        if "error" in entry:
            lines += [f"Error: {entry['error']}", ""]
        if entry["rows"]:
            lines += [model_table(entry), ""]
        notes = sorted({f"{row}: {'; '.join(r['notes'])}" for row, r in entry["rows"].items()
                        if r.get("notes")})
        if notes:
            lines += ["Notes: " + "; ".join(notes) + ".", ""]
    return "\n".join(lines)
