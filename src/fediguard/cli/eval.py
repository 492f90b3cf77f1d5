"""`fediguard eval MANIFEST`: measure the detectors and the policy on labelled images an admin holds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fediguard.cli.common import add_command, settings_from
from fediguard.cli.eval_output import render, side_by_side, write_report
from fediguard.detectors.registry import build_detectors
from fediguard.scanning.evaluation import Report, read_manifest, scan_samples, summarise
from fediguard.scanning.pipeline import Pipeline, media_limits

HELP = """\
Run the detectors and the policy over a manifest of labelled images and print how they did.

MANIFEST is a CSV of path,label[,age] rows: label is benign, nsfw or csam_suspect; age (optional) the
real age of the person shown. Printed: the confusion matrix of the labels at the current settings,
precision and recall per label, both swept over explicit_threshold and age_uncertainty_factor,
apparent-age error and minor/adult confusion at minor_age, label flips under small perturbations
(resize, JPEG q50, a 1-px border, a crop), and time per image. Nothing is recorded or written, except
the report with --report. Use only images you are allowed to hold.
"""


def add_parser(sub: Any) -> None:
    p = add_command(sub, "eval", "measure detectors and policy on labelled images", HELP)
    p.add_argument("manifest", type=Path, metavar="MANIFEST")
    p.add_argument(
        "--detectors", action="append", metavar="A,B",
        help="a detector set to measure (default: the configured detectors); repeat to compare sets",
    )  # fmt: skip
    p.add_argument("--report", type=Path, metavar="DIR", help="also write report.html (and PNG plots) here")
    p.add_argument("--no-perturb", action="store_true", help="skip the perturbation runs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    samples = read_manifest(args.manifest)
    sets = args.detectors or [",".join(settings.detectors)]
    limits = media_limits(settings)
    reports: list[Report] = []
    for spec in sets:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        detectors = build_detectors(settings, names)
        pipeline = Pipeline(detectors, limits, scanner="eval", screening=0.0)
        pipeline.warm_up()
        scored = scan_samples(samples, pipeline, limits, perturb=not args.no_perturb)
        reports.append(summarise(",".join(names), scored, settings.policy))
    for report in reports:
        print("\n".join(render(report)))
        print()
    if len(reports) > 1:
        print("\n".join(side_by_side(reports)))
    if args.report is not None:
        written = write_report(args.report, reports, settings.policy)
        print(f"report: {', '.join(str(p) for p in written)}")
    return 0
