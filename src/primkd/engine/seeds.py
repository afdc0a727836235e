"""A student's run folder holds one ``seed<k>/`` per seed it was trained with; the seeds of a run are the ``seeds`` of
params.yaml.

A folder of any other seed is left over from an earlier ``seeds`` list: neither DVC nor Snakemake deletes it when the
list shrinks, and it is not a dependency of any stage. Every reader of a run folder (evaluation, analysis, the
report's training curves) takes its seed folders from :func:`seed_folders`, so that such a leftover never changes a
result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from primkd.io import DataError


def seed_folders(run_dir: str | os.PathLike, file: str, seeds: Sequence[int] | None = None,
                 missing_ok: bool = False) -> dict[int, Path]:
    """The folders ``run_dir/seed<k>/`` that hold ``file``, by seed ``k``.

    Args:
        run_dir: a student's run folder.
        file: the file a seed's folder must hold to count (``model.pt``, ``curves.csv``).
        seeds: the seeds of params.yaml ``seeds``, whose order the result keeps; None: every seed on disk, in
            increasing order.
        missing_ok: leave out a listed seed without ``file`` (a run still training) instead of failing.

    Raises:
        DataError: a listed seed lacks ``file`` (unless ``missing_ok``).
    """
    run_dir = Path(run_dir)
    found = {int(p.name[4:]): p for p in run_dir.glob("seed*") if p.name[4:].isdigit() and (p / file).is_file()}
    if seeds is None:
        return dict(sorted(found.items()))
    missing = [seed for seed in seeds if seed not in found]
    if missing and not missing_ok:
        raise DataError(f"{run_dir}: no seed<k>/{file} for seeds {missing} of params.yaml `seeds`; run their "
                        f"training stages")
    return {seed: found[seed] for seed in seeds if seed in found}


def model_files(path: str | os.PathLike, seeds: Sequence[int] | None = None) -> dict[int | None, Path]:
    """Model files of one run: ``path`` itself (a single model, key None) or ``path/seed<k>/model.pt`` by seed, of
    ``seeds`` when given (see :func:`seed_folders`)."""
    path = Path(path)
    if path.is_file():
        return {None: path}
    if not seed_folders(path, "model.pt"):
        raise DataError(f"{path}: neither a model file nor a folder of seed<k>/model.pt; run its training stage")
    return {seed: folder / "model.pt" for seed, folder in seed_folders(path, "model.pt", seeds).items()}
