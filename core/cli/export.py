"""``main.py export``: write a model (FP32 or a quantized variant) as one ONNX file, or a
framework model as a deploy folder (its framework's files with one ONNX network per member)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cli.arguments import add_trust_option, positive_int
from core.cli.errors import EXIT_OK, UsageError, handle_errors
from core.cli.outputs import check_outputs
from core.report_files import write_json_atomic

__all__ = ["HELP", "NAME", "add_arguments", "run"]

NAME = "export"
HELP = "export a model or quantized variant to ONNX (integer QDQ weights) for ONNX Runtime"
DESCRIPTION = """\
Write MODEL as one ONNX file with dynamic batch and spatial axes. A quantized variant (a folder
written by `main.py quantize`) keeps the quantizer's exact integer codes, scales and zero points
as integer initializers with DequantizeLinear (per tensor or per channel; 4-bit codes as
INT4/UINT4 from opset 21), and its learned input steps as QuantizeLinear/DequantizeLinear
pairs. The model spec travels in the file's metadata, so the .onnx file opens as a model
(`segment --model model.onnx`). Layers that cannot be stored in integer form are kept in float
and listed in the summary.

An nnU-Net v2 model folder or a MONAI bundle (or a quantized variant of one) is exported to a
folder instead (an --out without .onnx): the framework's own files (plans.json and dataset.json,
or the bundle's configs) with each member network as model.onnx in its place (fold_K/, models/)
and a segbench_deploy.json manifest. The folder opens as a model whose framework pipeline runs
the ONNX networks in ONNX Runtime (`segment --model FOLDER`)."""
EPILOG = """\
examples:
  main.py export --model resources/demo/model --out demo_fp32.onnx
  main.py quantize --model resources/demo/model --calib ct.nii.gz --bits 8 --act-bits 8 --out q8
  main.py export --model q8 --out demo_w8a8.onnx --summary export.json
  main.py export --model nnUNet_results/Dataset001/nnUNetTrainer__nnUNetPlans__3d_fullres \
      --out deploy_3d_fullres

exit status: 0 done, 1 failed (message on stderr), 2 bad arguments"""


#: ``core.deploy.onnx_export.DEFAULT_OPSET`` and ``MIN_OPSET``, repeated so that `--help`
#: does not import torch and onnx (a test checks they agree).
DEFAULT_OPSET = 21
MIN_OPSET = 13


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` options to its sub-parser."""
    parser.add_argument("--model", required=True, metavar="MODEL", help="model folder or file")
    parser.add_argument(
        "--out",
        required=True,
        metavar="MODEL.onnx|FOLDER",
        help="ONNX file to write; for nnU-Net and MONAI models, a deploy folder",
    )
    parser.add_argument(
        "--opset",
        type=positive_int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} or later (default {DEFAULT_OPSET}, the first with 4-bit "
        "integers)",
    )
    parser.add_argument(
        "--summary", metavar="SUMMARY.json", help="also write the export summary as JSON"
    )
    add_trust_option(parser)


@handle_errors(NAME)
def run(args: argparse.Namespace) -> int:
    """Run ``export``; returns the exit code."""
    out = Path(args.out)
    to_folder = out.suffix.lower() != ".onnx"
    if args.opset < MIN_OPSET:
        raise UsageError(f"--opset {args.opset}: QDQ per channel needs opset {MIN_OPSET} or later")
    check_outputs(
        {"--out": args.out, "--summary": args.summary},
        [args.model],
        folder_outputs=("--out",) if to_folder else (),
    )
    for option, path in (("--out", args.out), ("--summary", args.summary)):
        if path is not None and not Path(path).parent.is_dir():
            raise UsageError(f"{option} {path}: folder {Path(path).parent} does not exist")
    from core.cli.model_loading import load_cli_model

    model = load_cli_model(args.model, trust=bool(args.trust))
    if model.framework is not None and not to_folder:
        raise UsageError(
            f"--out {out}: {model.name} is a {model.framework.framework} model, exported to a "
            "deploy folder (an --out without .onnx)"
        )
    if model.framework is None and to_folder:
        raise UsageError(f"--out {out}: ONNX files end in .onnx")
    if to_folder:
        from core.deploy.framework_package import export_framework_onnx

        summary = export_framework_onnx(model, out, opset=args.opset)
    else:
        from core.deploy.onnx_export import export_onnx

        summary = export_onnx(model, out, opset=args.opset)
    if args.summary:
        write_json_atomic({"command": NAME, "out": str(out), **summary.to_dict()}, args.summary)
    if not getattr(args, "quiet", False):
        for line in summary.lines():
            print(line)
        print(f"{'Deploy folder' if to_folder else 'ONNX model'} written to {out}")
    return EXIT_OK
