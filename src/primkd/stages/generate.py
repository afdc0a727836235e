"""``python -m primkd.stages --write`` writes dvc.yaml and the Snakemake rule files generated from the stage table;
``--check`` fails when one differs from what the table generates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from primkd.config import ConfigError
from primkd.stages.dvc import render_dvc, render_shipped_dvc
from primkd.stages.snakemake import render_smk
from primkd.stages.table import STAGES


def generated_files(root: str | Path = ".") -> dict[Path, str]:
    """Each generated file of the repository at ``root`` (from its params.yaml) and its text."""
    from primkd.config import effective_params, load_params

    root = Path(root)
    params = root / "params.yaml"
    smk = render_smk(effective_params(load_params(params)))
    shipped = {root / folder / "dvc.yaml": render_shipped_dvc(folder, params)
               for folder in dict.fromkeys(s.shipped for s in STAGES if s.shipped)}
    return {root / "dvc.yaml": render_dvc(params), **shipped, **{root / name: text for name, text in smk.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m primkd.stages",
                                     description="Generate dvc.yaml and workflow/rules/*.smk from the stage table.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="Rewrite the generated files.")
    group.add_argument("--check", action="store_true", help="Exit with status 1 when one is out of date.")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="Repository root, holding params.yaml (default: the current folder).")
    args = parser.parse_args(argv)
    try:
        files = generated_files(args.root)
    except ConfigError as e:  # a typo in params.yaml: its message, not a traceback (as the primkd command does)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.write:
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
            print(f"wrote {path}")
    elif stale:
        sys.exit(f"{', '.join(map(str, stale))} out of date with src/primkd/stages/table.py; run "
                 f"`python -m primkd.stages --write`")
