"""The Snakemake report's captions (workflow/report/*.rst): each renders, as Snakemake renders it (Jinja, then
reStructuredText), to one line that names what is shown and, for the paper's tables and figures, the evaluation mode
paper.yaml gives them."""

from pathlib import Path
from types import SimpleNamespace

from docutils.core import publish_parts
from jinja2 import Environment

from primkd.report.tables import load_paper

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "workflow" / "report"
MODE_WORDS = {"single": "single-scale", "multi_scale_flip": "multi-scale + flip"}


def render(caption: str, **wildcards) -> str:
    """The caption's text as Snakemake renders it (the same Jinja settings), and its HTML free of RST errors."""
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(**wildcards), config={"preset": "smoke"})
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string((CAPTIONS / caption).read_text())
    text = text.render(snakemake=snakemake)
    html = publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]
    assert "system-message" not in html, (caption, wildcards)
    return text.strip()


def test_every_table_has_a_one_line_caption_with_the_papers_evaluation_mode():
    paper = load_paper()
    for key, spec in paper.tables.items():
        for name in (key, f"{key}_significance"):
            text = render("tables.rst", name=name, ext="csv")
            assert "\n" not in text and text.startswith(f"Table {key.removeprefix('table')},"), text
            if key != "table8":  # CKA of features: no evaluation mode
                others = [w for mode, w in MODE_WORDS.items() if mode != spec.eval_mode]
                assert MODE_WORDS[spec.eval_mode] in text and not any(w in text for w in others), (key, text)
    assert "(csv)" in render("tables.rst", name="table2", ext="csv")
    assert "paired bootstrap" in render("tables.rst", name="table3_significance", ext="csv")


def test_figure_and_run_captions_name_the_mode():
    assert MODE_WORDS[load_paper().figure1.eval_mode] in render("figure1.rst")
    for name in ("figure3_qualitative", "figure4_histograms"):
        assert render("analysis.rst", name=name).startswith(f"Figure {name[6]}:")
    assert render("curves.rst", run="cmx").startswith("Training curves of cmx:")
    assert "mean over the seeds" in render("curves.rst", run="ablation")
    assert "single-scale" in render("curves.rst", run="primkd")
    assert "multi-scale + flip" in render("evaluation.rst", run="primkd")
    for caption in ("report_md.rst", "summary.rst", "figure1.rst", "evaluation.rst"):
        assert "\n" not in render(caption, run="cmx")
    assert "preset\n**smoke** of ``params.yaml``" in render("workflow.rst")
