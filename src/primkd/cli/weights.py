"""Command-line sub-commands for weights and inference: ``infer``, ``export`` and ``import-official``.

``register(sub)`` adds them to the ``primkd`` parser; unlike the pipeline stages they read no parameter file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from primkd.cli.options import add_command

log = logging.getLogger("primkd")

INTRINSICS = ("fx", "fy", "cx", "cy")


def _intrinsics(args: argparse.Namespace) -> dict | None:
    """All four ``--fx --fy --cx --cy`` as a dict, or None when none is given; a partial set is an error."""
    from primkd.config import ConfigError

    given = {k: getattr(args, k) for k in INTRINSICS if getattr(args, k) is not None}
    if given and len(given) < len(INTRINSICS):
        raise ConfigError(f"give all of --fx --fy --cx --cy (1-based principal point) or none; missing: "
                         f"{', '.join(f'--{k}' for k in INTRINSICS if k not in given)}")
    return given or None


def _check_infer_args(args: argparse.Namespace, reads_depth: bool) -> None:
    from primkd.config import ConfigError

    if (args.rgb is None) == (args.rgb_dir is None):
        raise ConfigError("give either --rgb FILE (one image) or --rgb-dir FOLDER (a folder of images)")
    single = args.rgb is not None
    depth_given = (args.depth or args.hha) if single else (args.depth_dir or args.hha_dir)
    if reads_depth and not depth_given:
        flags = "--depth or --hha" if single else "--depth-dir or --hha-dir"
        raise ConfigError(f"{args.model} is an RGB-D model: give {flags}")
    if single and Path(args.out).suffix.lower() != ".png":
        raise ConfigError(f"--out must be a .png file when segmenting one image, got {args.out}")


def cmd_infer(args: argparse.Namespace) -> None:
    """Segment one RGB(-D) pair or a folder of them and write coloured label PNGs (and overlays)."""
    from primkd.data.dataset import reads_depth
    from primkd.engine.runtime import select_device
    from primkd.infer import infer_folder, infer_one
    from primkd.models.io import load_any

    model, meta = load_any(args.model, select_device(args.device, "--device"))
    _check_infer_args(args, reads_depth(meta["inputs"]))
    intrinsics = _intrinsics(args)
    alpha = args.alpha if args.overlay else None
    if args.rgb_dir is not None:
        names = infer_folder(model, meta, args.rgb_dir, args.out, args.depth_dir, args.hha_dir, intrinsics,
                             args.depth_scale, args.scales, args.flip, alpha, progress=not args.no_progress)
        log.info("segmented %d images into %s", len(names), args.out)
        return
    if intrinsics is None and args.depth and not args.hha and reads_depth(meta["inputs"]):
        log.info("no intrinsics given: using the NYU Depth V2 camera scaled to the image's size")
    written = infer_one(model, meta, args.rgb, args.out, args.depth, args.hha, intrinsics, args.depth_scale,
                        args.scales, args.flip, alpha)
    log.info("wrote %s", ", ".join(map(str, written)))


def cmd_export(args: argparse.Namespace) -> None:
    """Export a model file as model.safetensors + config.json."""
    from primkd.models.io import export_safetensors

    export_safetensors(args.model, args.out)


def cmd_import_official(args: argparse.Namespace) -> None:
    """Convert an official CMX / PrimKD checkpoint into a project model file."""
    from primkd.config import ConfigError
    from primkd.data.layout import read_meta
    from primkd.weights import import_official

    if args.num_classes is not None and not 1 <= args.num_classes <= 255:  # labels: 8-bit PNGs, 255 = ignore
        raise ConfigError(f"--num-classes {args.num_classes}: a model predicts 1 to 255 classes (NYU 40, SUN-RGBD 37)")
    classes = read_meta(args.classes_from)["classes"] if args.classes_from else None
    import_official(args.checkpoint, args.kind, args.variant, args.num_classes, args.out, bgr=args.bgr,
                    decoder_bn_eps=args.decoder_bn_eps, decoder_embed_dim=args.decoder_embed_dim, classes=classes)


def register(subparsers) -> None:
    """Add the ``infer``, ``export`` and ``import-official`` sub-commands to ``primkd``'s sub-parsers."""
    from primkd.config import backbones  # the variant names without importing torch (primkd.models.mit)

    p = add_command(subparsers, "infer", cmd_infer, "Segment an RGB(-D) pair or a folder with a trained, imported or "
                 "exported model; write coloured label PNGs.", params=False)
    p.add_argument("--model", required=True, help="Model file (.pt) or exported folder (primkd export).")
    p.add_argument("--rgb", help="One RGB image.")
    p.add_argument("--depth", help="Its depth: uint16 PNG (see --depth-scale) or float .npy in metres.")
    p.add_argument("--hha", help="Its HHA PNG, used instead of computing HHA from --depth.")
    p.add_argument("--rgb-dir", help="Folder of RGB images (.png/.jpg); each file stem names a sample.")
    p.add_argument("--depth-dir", help="Folder of depth maps with the same stems (.png or .npy).")
    p.add_argument("--hha-dir", help="Folder of HHA PNGs with the same stems, used instead of --depth-dir.")
    p.add_argument("--out", required=True, help="Output PNG (one image) or output folder (--rgb-dir).")
    p.add_argument("--overlay", action="store_true", help="Also write <name>_overlay.png over the RGB image.")
    p.add_argument("--alpha", type=float, default=0.5, help="Weight of the label colours in the overlay (0..1).")
    p.add_argument("--depth-scale", type=float, default=1000.0, help="PNG depth units per metre.")
    for k in INTRINSICS:
        p.add_argument(f"--{k}", type=float, help=f"Camera {k} in pixels, 1-based (default: NYU camera, rescaled).")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="Test scales whose predictions are summed.")
    p.add_argument("--flip", action="store_true", help="Also sum the horizontally flipped prediction.")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="Where to run the network.")

    p = add_command(subparsers, "export", cmd_export, "Export a model file as model.safetensors + config.json.",
                    params=False)
    p.add_argument("--model", required=True, help="Model file written by `primkd train` or `primkd import-official`.")
    p.add_argument("--out", required=True,
                   help="Output folder (replaced as a whole; a folder holding files it did not write is refused).")

    p = add_command(subparsers, "import-official", cmd_import_official,
                    "Convert an official CMX / PrimKD checkpoint into a primkd model file.", params=False)
    p.add_argument("--checkpoint", required=True, help="Official checkpoint (.pth) from the CMX or PrimKD release.")
    p.add_argument("--kind", choices=["student", "teacher"],
                   help="student: CMX or PrimKD RGB-D model; teacher: PrimKD RGB teacher (nyu-rgb.pth); default: a "
                        "student when the checkpoint has the depth branch.")
    p.add_argument("--variant", choices=sorted(backbones()),
                   help="MiT variant it was trained with (default: the one of its stage widths and depths).")
    p.add_argument("--num-classes", type=int,
                   help="Classes of the checkpoint (NYU 40, SUN-RGBD 37; default: its classifier's).")
    p.add_argument("--out", required=True, help="Model file to write (.pt).")
    p.add_argument("--bgr", action=argparse.BooleanOptionalAction, default=True,
                   help="Record that the model takes BGR input, as the official code feeds it (default: yes).")
    p.add_argument("--decoder-bn-eps", type=float, default=1e-5,
                   help="Decoder BatchNorm eps: 1e-5 as the official evaluation builds it, 1e-3 as training does.")
    p.add_argument("--decoder-embed-dim", type=int,
                   help="Decoder width (512 in CMX and PrimKD; default: the checkpoint's).")
    p.add_argument("--classes-from", help="Prepared dataset whose meta.json class names are stored with the model.")
