"""The Snakemake report's captions (workflow/report/*.rst): each renders, as Snakemake renders it (Jinja, then
reStructuredText), to one line that names what is shown and, for the paper's tables and figures, the evaluation mode
paper.yaml gives them."""

from pathlib import Path
from types import SimpleNamespace

from docutils.core import publish_parts
from jinja2 import Environment

from primkd.report.tables import load_paper
from primkd.stages.snakemake import rule_output
from primkd.stages.table import STAGES

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "workflow" / "report"
MODE_WORDS = {"single": "single-scale", "multi_scale_flip": "multi-scale + flip"}


def render_html(caption: str, output: list[str], **wildcards) -> tuple[str, str]:
    """The caption as Snakemake renders it (the same Jinja settings, then reStructuredText to HTML), for a job with
    ``output`` and a file with ``wildcards``: its text and its HTML, free of RST errors."""
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(**wildcards), output=output, config={"preset": "smoke"})
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string((CAPTIONS / caption).read_text())
    text = text.render(snakemake=snakemake)
    html = publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]
    assert "system-message" not in html, (caption, wildcards)
    return text.strip(), html


def render(caption: str, **wildcards) -> str:
    """The caption's text for a job whose outputs it does not show."""
    return render_html(caption, [], **wildcards)[0]


def test_every_table_has_a_one_line_caption_with_the_papers_evaluation_mode():
    paper = load_paper()
    for key, spec in paper.tables.items():
        for name in (key, f"{key}_significance"):
            text = render("tables.rst", name=name, ext="csv")
            assert "\n" not in text and text.startswith(f"Table {key.removeprefix('table')},"), text
            if key != "table8":  # CKA of features: no evaluation mode
                others = [w for mode, w in MODE_WORDS.items() if mode != spec.eval_mode]
                assert MODE_WORDS[spec.eval_mode] in text and not any(w in text for w in others), (key, text)
    assert "paired bootstrap" in render("tables.rst", name="table3_significance", ext="csv")


def test_figure_and_run_captions_name_the_mode():
    assert MODE_WORDS[load_paper().figure1.eval_mode] in render("figure1.rst")
    for name in ("figure3_qualitative", "figure4_histograms"):
        assert render("analysis.rst", name=name).startswith(f"Figure {name[6]}:")
    assert render("curves.rst", run="cmx").startswith("Training curves of cmx:")
    assert "mean over the seeds" in render("curves.rst", run="ablation")
    assert "single-scale" in render("curves.rst", run="primkd")
    for caption in ("report_md.rst", "summary.rst", "figure1.rst"):
        assert "\n" not in render(caption)
    assert "preset\n**smoke** of ``params.yaml``" in render("workflow.rst")


def test_captions_show_the_tables_and_metrics_files_themselves(tmp_path):
    """A report page shows a Markdown or CSV file only as a download: the captions put it on the page, the Markdown
    and JSON as they are, the CSV as an HTML table."""
    tables = tmp_path / "report" / "tables"
    tables.mkdir(parents=True)
    (tables / "table1.md").write_text("| Run | mIoU (%) ours |\n|---|---:|\n| PrimKD | 51.0 ± 1.4 |\n")
    (tables / "table1.csv").write_text("row,miou_ours,miou_ours_std\nPrimKD,51.0,1.414214\n")
    outputs = [str(tmp_path / "report" / "curves"), str(tables), str(tmp_path / "report" / "figure1.png")]
    text, html = render_html("tables.rst", outputs, name="table1", ext="md")
    assert text.splitlines()[0].startswith("Table 1, teacher modality:") and "| PrimKD | 51.0 ± 1.4 |" in html
    _, html = render_html("tables.rst", outputs, name="table1", ext="csv")
    assert "<table" in html and "<td>1.414214</td>" in html and "<th class=\"head\">miou_ours</th>" in html
    (tmp_path / "REPORT.md").write_text("## Table 1: Teacher modality\n")
    (tmp_path / "summary.json").write_text('{"preset": "smoke"}\n')
    (tmp_path / "primkd.json").write_text('{"miou": 0.51}\n')
    for caption, path, shown in (("report_md.rst", "REPORT.md", "## Table 1: Teacher modality"),
                                 ("summary.rst", "summary.json", "&quot;preset&quot;: &quot;smoke&quot;"),
                                 ("evaluation.rst", "primkd.json", "&quot;miou&quot;: 0.51")):
        text, html = render_html(caption, [str(tmp_path / "primkd_per_image.npz"), str(tmp_path / path)])
        assert shown in html, caption
    assert text.startswith("Evaluation of primkd on the test split:") and "multi-scale + flip" in text.splitlines()[0]


def test_every_reported_output_has_a_caption_a_category_and_patterns_for_a_folder():
    reported = [o for s in STAGES for o in s.outs if o.report is not None]
    assert {o.report.category for o in reported} == {"Tables", "Figures", "Training", "Per run"}
    for o in reported:
        assert (CAPTIONS / o.report.caption).is_file() and bool(o.report.patterns) == o.folder, o.path
    tables = next(o for o in reported if o.path.endswith("/tables"))
    assert rule_output(tables) == [
        "report(", '    directory("results/{preset}/report/tables"),', '    caption="../report/tables.rst",',
        '    category="Tables",', '    patterns=["{name}.{ext,(md|csv)}"],',
        '    labels={"table": "{name}", "format": "{ext}"},', "),"]


def test_the_test_and_train_split_captions_each_show_their_own_file(tmp_path):
    """An evaluate job has two metrics files; Snakemake renders a caption with the job's outputs, not the file's, so
    each split has its caption, which picks its own file."""
    (tmp_path / "primkd.json").write_text('{"split": "test"}\n')
    (tmp_path / "primkd.train.json").write_text('{"split": "train"}\n')
    outputs = [str(tmp_path / name) for name in ("primkd_per_image.npz", "primkd.json", "primkd.train.json")]
    test_text, test_html = render_html("evaluation.rst", outputs)
    train_text, train_html = render_html("evaluation_train.rst", outputs)
    assert test_text.startswith("Evaluation of primkd on the test split:") and "&quot;test&quot;" in test_html
    assert "&quot;train&quot;" not in test_html
    assert train_text.startswith("Evaluation of primkd on its train split") and "single-scale, of the last epoch" in (
        train_text.splitlines()[0])
    assert "&quot;train&quot;" in train_html and "&quot;test&quot;" not in train_html
    reported = {o.path: o.report.caption for s in STAGES for o in s.outs if o.report is not None}
    assert reported["results/{preset}/eval/cmx.train.json"] == "evaluation_train.rst"
    assert reported["results/{preset}/eval/cmx.json"] == "evaluation.rst"
