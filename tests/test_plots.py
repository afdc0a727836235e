"""`dvc plots show` renders offline: the HTML template of .dvc/config loads the plotting scripts from the repository
(workflow/plots/), in the versions DVC's own page loads from a CDN, unchanged from their npm packages."""

import configparser
import hashlib
import re
import shutil
from pathlib import Path

from dvc_render.vega import VegaRenderer

from pipeline_utils import run

REPO = Path(__file__).resolve().parents[1]
PLOTS = REPO / "workflow" / "plots"


def configured_template() -> Path:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    return (REPO / ".dvc" / config["plots"]["html_template"]).resolve()  # DVC reads it relative to .dvc/


def script_sources(html: str) -> list[str]:
    return re.findall(r"<script[^>]*\ssrc\s*=\s*\"([^\"]+)\"", html)


def test_the_configured_template_loads_only_the_vendored_scripts_of_dvcs_versions():
    template = configured_template()
    assert template == PLOTS / "index.html"
    html = template.read_text()
    assert "{plot_divs}" in html and "{scripts}" not in html  # DVC's CDN tags would replace {scripts}
    assert "://" not in html and "//cdn" not in html
    # DVC writes the page to dvc_plots/index.html: the sources are relative to that folder.
    sources = script_sources(html)
    assert [(REPO / "dvc_plots" / src).resolve().parent for src in sources] == [PLOTS] * 3
    assert all((REPO / "dvc_plots" / src).resolve().is_file() for src in sources)
    # The names carry the versions DVC's default page loads from the CDN (vega, vega-lite, vega-embed, in that order).
    cdn = re.findall(r"npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS)
    assert [Path(src).name for src in sources] == [f"{name}-{version}.min.js" for name, version in cdn]


def test_the_vendored_files_are_those_recorded_with_their_licences():
    readme = (PLOTS / "README.md").read_text()
    recorded = dict(re.findall(r"^\| `([^`]+\.min\.js)` \| `([0-9a-f]{64})` \|$", readme, flags=re.M))
    assert sorted(recorded) == sorted(p.name for p in PLOTS.glob("*.min.js")) and len(recorded) == 3
    for name, digest in recorded.items():
        assert hashlib.sha256((PLOTS / name).read_bytes()).hexdigest() == digest, name
    for package in ("vega", "vega-lite", "vega-embed"):
        licence = (PLOTS / f"LICENSE.{package}").read_text()
        assert "University of Washington Interactive Data Lab" in licence and "Redistribution and use" in licence


def test_dvc_plots_show_writes_a_page_without_network_scripts(tmp_path):
    """`dvc plots show` of a two-row CSV in a repository configured as this one: the page has the plot and loads
    the scripts from workflow/plots/ (relative to dvc_plots/), none from the network."""
    root = tmp_path / "repo"
    (root / "workflow").mkdir(parents=True)
    shutil.copytree(PLOTS, root / "workflow" / "plots")
    run(["dvc", "init", "--no-scm", "-q"], root)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    (root / "curve.csv").write_text("epoch,loss\n1,2.5\n2,1.25\n")
    run(["dvc", "plots", "show", "curve.csv", "-x", "epoch", "-y", "loss"], root)
    page = (root / "dvc_plots" / "index.html").read_text()
    assert "vegaEmbed(" in page and '"loss": "1.25"' in page.replace("'", '"')
    assert "://" not in "".join(script_sources(page)) and "cdn.jsdelivr" not in page
    assert all((root / "dvc_plots" / src).resolve().is_file() for src in script_sources(page))
