"""What `fediguard eval` prints, and the report `--report DIR` writes: report.html, and PNG plots
when matplotlib is installed (without it the HTML says so and the figures are in its tables). No
image is copied."""

from __future__ import annotations

import html
import importlib.util
import statistics
from pathlib import Path

from fediguard.errors import ConfigError
from fediguard.scanning.evaluation import PERTURBATIONS, Rates, Report
from fediguard.verdicts import PolicyConfig


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:3.0f}%"


def _pr(r: Rates) -> str:
    return f"P {_pct(r.precision)} R {_pct(r.recall)}"


def render(report: Report) -> list[str]:
    """The printed report of one detector set."""
    lines = [f"== detectors {report.detectors}: {report.images} images"]
    lines += [f"  not scanned: {e}" for e in report.errors]
    width = max(12, *(len(o) for o in report.outcomes))
    lines.append("confusion (rows: manifest label, columns: policy label)")
    lines.append(" " * 14 + "".join(o.rjust(width + 1) for o in report.outcomes))
    for truth in report.truths:
        counts = "".join(str(report.matrix[(truth, o)]).rjust(width + 1) for o in report.outcomes)
        lines.append(f"  {truth:<12}{counts}")
    lines.append("per label: " + "; ".join(f"{k} {_pr(v)}" for k, v in report.per_label.items()))
    lines.append("explicit_threshold sweep (explicit = nsfw|review|csam_suspect; csam_suspect):")
    lines += [f"  {x:.1f}  explicit {_pr(e)}   csam_suspect {_pr(c)}" for x, e, c in report.sweep_threshold]
    lines.append("age_uncertainty_factor sweep:")
    lines += [f"  {k:.1f}  explicit {_pr(e)}   csam_suspect {_pr(c)}" for k, e, c in report.sweep_factor]
    if report.age_pairs or report.no_aged_face:
        mae = report.age_mae
        lines.append(
            f"apparent age: MAE {mae:.1f} years over {len(report.age_pairs)} faces" if mae is not None
            else "apparent age: no face aged"
        )  # fmt: skip
        lines.append(f"  images with an age but no aged face: {report.no_aged_face}")
        m = report.minor_matrix
        lines.append(
            f"  minors read as minors {m[(True, True)]}, as adults {m[(True, False)]}; "
            f"adults read as minors {m[(False, True)]}, as adults {m[(False, False)]}"
        )
    if any(total for _, total in report.flips.values()):
        lines.append("label flips under perturbation: " + ", ".join(
            f"{name} {flipped}/{total}" for name, (flipped, total) in report.flips.items()
        ))  # fmt: skip
    if report.seconds:
        ms = sorted(1000 * s for s in report.seconds)
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        lines.append(f"time per image: median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms")
    return lines


def side_by_side(reports: list[Report]) -> list[str]:
    """One row per figure, one column per detector set."""
    width = max(14, *(len(r.detectors) + 2 for r in reports))
    lines = ["== side by side", " " * 28 + "".join(r.detectors.rjust(width) for r in reports)]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"{name:<28}" + "".join(v.rjust(width) for v in values))

    row("explicit P/R", [f"{_pct(r.current[0].precision)}/{_pct(r.current[0].recall)}" for r in reports])
    row("csam_suspect P/R", [f"{_pct(r.current[1].precision)}/{_pct(r.current[1].recall)}" for r in reports])
    row("age MAE", ["-" if r.age_mae is None else f"{r.age_mae:.1f}" for r in reports])
    for name in PERTURBATIONS:
        row(f"flips: {name}", [f"{r.flips[name][0]}/{r.flips[name][1]}" for r in reports])
    row(
        "median ms per image",
        [f"{1000 * statistics.median(r.seconds):.0f}" if r.seconds else "-" for r in reports],
    )
    return lines


def write_report(folder: Path, reports: list[Report], policy: PolicyConfig) -> list[Path]:
    """Write the report into ``folder`` (created if missing); returns the files written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--report {folder}: cannot create the folder: {exc.strerror}") from exc
    written: list[Path] = []
    plots = importlib.util.find_spec("matplotlib") is not None
    images: list[str] = []
    if plots:
        for i, report in enumerate(reports):
            written += _plots(folder, i, report)
        images = [p.name for p in written]
    page = folder / "report.html"
    body = [
        "<!doctype html><meta charset=utf-8><title>fediguard eval</title>",
        "<h1>fediguard eval</h1>",
        f"<p>policy: {html.escape(policy.fingerprint())}</p>",
    ]
    if not plots:
        body.append("<p>matplotlib is not installed: no plots (pip install matplotlib).</p>")
    for report in reports:
        body.append(f"<h2>{html.escape(report.detectors)}</h2><pre>")
        body.append(html.escape("\n".join(render(report))))
        body.append("</pre>")
    body += [f'<p><img src="{html.escape(name)}" alt="{html.escape(name)}"></p>' for name in images]
    try:
        page.write_text("\n".join(body) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--report {folder}: cannot write {page.name}: {exc.strerror}") from exc
    return [page, *written]


def _plots(folder: Path, index: int, report: Report) -> list[Path]:  # pragma: no cover - needs matplotlib
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [x for x, _, _ in report.sweep_threshold]
    for name, series in (
        ("explicit", [e for _, e, _ in report.sweep_threshold]),
        ("csam_suspect", [c for _, _, c in report.sweep_threshold]),
    ):
        ax.plot(xs, [r.precision or 0 for r in series], label=f"{name} precision")
        ax.plot(xs, [r.recall or 0 for r in series], "--", label=f"{name} recall")
    ax.set_xlabel("explicit_threshold")
    ax.set_title(report.detectors)
    ax.legend()
    path = folder / f"sweep-{index}.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    if report.age_pairs:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter([a for a, _ in report.age_pairs], [b for _, b in report.age_pairs], s=8)
        ax.plot([0, 80], [0, 80], color="grey")
        ax.set_xlabel("age (manifest)")
        ax.set_ylabel("apparent age")
        path = folder / f"ages-{index}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
