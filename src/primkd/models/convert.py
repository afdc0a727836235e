"""Weight-name conversion: the template engine that the model files' name tables run through.

Each model file owns the table of its own names, as timm's ``checkpoint_filter_fn`` does (``mit.py``: SegFormer
release and Hugging Face; ``fusion.py``: FRM/FFM; ``decoder.py``: the MLP head; ``segmentors.py``: whole CMX and
teacher checkpoints). Loading the converted weights is :mod:`primkd.models.io`.

Official names: the SegFormer release (``mit_bX.pth``: ``patch_embed{S}.*``, ``block{S}.{j}.*``, ``norm{S}.*``,
stage ``S`` 1-based), CMX / PrimKD (the same names under ``backbone.``, the depth branch under ``backbone.extra_``,
``backbone.FRMs.{i}``, ``backbone.FFMs.{i}``, ``decode_head.*``) and Hugging Face ``nvidia/mit-bX``
(``segformer.encoder.*``, transformers 4 names, or the ``stages.*`` names transformers 5 uses in memory).
Ours: ``stages.{s}.patch_embed`` / ``.blocks.{j}`` / ``.norm`` (``s`` 0-based) inside ``encoder``,
``encoder_rgb``, ``encoder_modal``; ``frms.{i}``, ``ffms.{i}``, ``decoder``.

Each name table is a list of ``(official, ours)`` templates read in order, first match wins, in both directions.
Template fields: ``{S}`` 1-based stage, ``{s}`` the same stage 0-based, ``{j}`` block, ``{i}`` module index,
``{rest}`` the remaining dotted tail.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping

from torch import Tensor

StateDict = dict[str, Tensor]
NameTable = list[tuple[str, str]]

log = logging.getLogger(__name__)

_FIELD_REGEX = {"S": r"(?P<S>\d+)", "s": r"(?P<s>\d+)", "j": r"(?P<j>\d+)", "i": r"(?P<i>\d+)", "rest": r"(?P<rest>.+)"}

@functools.cache
def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(_FIELD_REGEX[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts))


def _rename(key: str, table: NameTable, to_ours: bool) -> str | None:
    """Translate one name through ``table`` (official → ours if ``to_ours``); ``None`` if no template matches."""
    for official, ours in table:
        source, target = (official, ours) if to_ours else (ours, official)
        match = _compile(source).fullmatch(key)
        if match:
            fields = dict(match.groupdict())
            if "S" in fields:
                fields["s"] = str(int(fields["S"]) - 1)
            elif "s" in fields:
                fields["S"] = str(int(fields["s"]) + 1)
            return target.format(**fields)
    return None


def convert_names(sd: Mapping[str, Tensor], table: NameTable, to_ours: bool, what: str,
             drop: Iterable[str] = ()) -> StateDict:
    """Rename every entry; keys starting with a ``drop`` prefix are left out (and logged), unknown keys raise
    ``KeyError``."""
    drop = tuple(drop)
    out, unknown, dropped = {}, [], []
    for key, value in sd.items():
        if key.startswith(drop):
            dropped.append(key)
            continue
        new = _rename(key, table, to_ours)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise KeyError(f"{what}: {len(unknown)} names not recognised, e.g. {unknown[:5]}; is this the right kind of "
                       f"checkpoint (strip wrappers such as 'module.' with strip_prefix first)?")
    if dropped:
        log.info("%s: left out %d entries not used here (%s), e.g. %s", what, len(dropped),
                 ", ".join(f"{p}*" for p in drop if any(k.startswith(p) for k in dropped)), dropped[0])
    return out


def strip_prefix(sd: Mapping[str, Tensor], prefix: str) -> StateDict:
    """Remove ``prefix`` (e.g. ``"module."`` from DDP checkpoints) from every key that starts with it."""
    return {k.removeprefix(prefix): v for k, v in sd.items()}
