"""A lab shares results as DVC means it: one clone runs the smoke pipeline and pushes to a remote (here a local
folder), a colleague's clone pulls and finds every stage up to date. Also the CPU-only install route's package
selection (the Makefile's TORCH=cpu)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline_utils import REPO, copy_run, copy_workflow, run, set_param

# A one-experiment grid keeps the pipeline short; it still has every kind of stage (data, both teachers, CMX, one
# distilled student, analysis, report).
EXPERIMENTS = {"primkd": {"teacher": "rgb"}}


def git(root, *args):
    return run(["git", "-c", "user.name=lab", "-c", "user.email=lab@example.org", *args], root)


# What a change of kd.beta reaches (the distilled student, its evaluation, the analysis of it, the report) and the
# stages it shares with the baseline, which an experiment must take from the cache (prefixes of the stage names).
REACHED = ("resolve_params", "train_student", "evaluate_student", "analyze", "report")
SHARED = ("download", "prepare", "hha", "train_teacher", "train_cmx", "evaluate_teacher", "evaluate_cmx")


def stages_run(dvc_output: str) -> set[str]:
    return set(re.findall(r"^Running stage '([^']+)'", dvc_output, flags=re.M))


def assert_only_reached_stages_ran(ran: set[str], what: str) -> None:
    assert any(s.startswith("train_student") for s in ran), f"{what}: the student did not train: {sorted(ran)}"
    assert not {s for s in ran if s.startswith(SHARED)}, f"{what} recomputed shared stages: {sorted(ran)}"
    assert all(s.startswith(REACHED) for s in ran), (what, sorted(ran))


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A git repository of the workflow (the project's .gitignore included) whose smoke pipeline ran, with its
    results committed (git) and pushed (DVC) to a local remote."""
    tmp = tmp_path_factory.mktemp("lab")
    root = copy_workflow(tmp / "trainer", preset="smoke")
    set_param(root, ["experiments"], EXPERIMENTS)
    set_param(root, ["seeds"], [0])
    shutil.copy2(REPO / ".gitignore", root)
    git(root, "init", "-q")
    run(["dvc", "init", "-q"], root)
    run(["dvc", "repro"], root)
    run(["dvc", "remote", "add", "-d", "lab", str(tmp / "remote")], root)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "smoke results")
    run(["dvc", "push"], root)
    return tmp, root


@pytest.mark.integration
def test_a_pulled_clone_is_up_to_date(pushed):
    tmp, root = pushed
    clone = tmp / "colleague"
    git(tmp, "clone", "-q", str(root), str(clone))
    run(["dvc", "pull"], clone)
    status = json.loads(run(["dvc", "status", "--json"], clone).stdout)
    # resolve_params is always_changed (it rereads the inputs whose digests are parameters); it rewrites nothing
    assert set(status) <= {"resolve_params"}, status
    assert stages_run(run(["dvc", "repro"], clone).stdout) <= {"resolve_params"}
    assert git(clone, "status", "--porcelain").stdout == ""


def test_every_output_travels_in_git_or_in_the_dvc_cache():
    """Never neither: an output kept out of DVC's cache (`cache: false`) is one git tracks, and a cached one is
    git-ignored (DVC refuses an output that git tracks). The round trips below rely on it."""
    from primkd.stages.table import STAGES

    values = {"preset": "smoke", "modality": "rgb", "exp": "primkd", "seed": 0, "teacher": "rgb"}
    outs = {out.path.format(**values): out.cache for s in STAGES for out in s.outs}
    ignored = set(subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input="\n".join(outs),
                                 capture_output=True, text=True, timeout=60).stdout.split())
    assert {p for p, cached in outs.items() if cached != (p in ignored)} == set()
    assert {p for p, cached in outs.items() if not cached} >= {"results/smoke/REPORT.md",
                                                              "results/smoke/effective_params.yaml"}


def test_cpu_route_leaves_out_exactly_the_packages_of_torchs_cuda_build(tmp_path):
    """The Makefile's list for TORCH=cpu (the lock's Linux-only pins) is the CUDA libraries and triton, which reach
    primkd only through torch: the CPU build does without them, and nothing else needs them."""
    shutil.copy2(REPO / "requirements.lock", tmp_path)
    (tmp_path / "v").mkdir()  # UV=true: the recipe needs no venv to derive the list
    subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "TORCH=cpu", "UV=/bin/true", "VENV=v",
                    "v/cuda-only.txt"], cwd=tmp_path, check=True, capture_output=True, text=True, timeout=60)
    left_out = set((tmp_path / "v" / "cuda-only.txt").read_text().split())
    via: dict[str, set[str]] = {}  # package -> the packages that require it, by the lock's `# via` comments
    current = None
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if pin := re.match(r"^([A-Za-z0-9_.-]+)==", line):
            current = pin[1].lower()
            via[current] = set()
        elif current and (who := re.fullmatch(r"#\s+(?:via\s+)?([A-Za-z0-9_.-]+)(?: \(pyproject\.toml\))?",
                                                line.strip())) and who[1] != "via":
            via[current].add(who[1].lower())

    def only_through_torch(name: str, seen=frozenset()) -> bool:
        return name != "primkd" and all(p == "torch" or (p not in seen and only_through_torch(p, seen | {name}))
                                        for p in via[name])

    assert left_out == {name for name in via if re.match(r"(nvidia|cuda)-|triton$", name)}  # CUDA's, all of them
    assert all(only_through_torch(name) for name in left_out)  # needed by nothing else
    # a venv made with TORCH=cpu stays on the CPU route when a later `make` (after `make lock`) reinstalls it
    (tmp_path / "pyproject.toml").touch()
    plan = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), "UV=/bin/true", "VENV=v", "v/.installed"],
                          cwd=tmp_path, check=True, capture_output=True, text=True, timeout=60).stdout
    assert "--torch-backend cpu --excludes v/cuda-only.txt -r requirements.lock" in plan


@pytest.mark.integration
def test_queued_experiments_reuse_what_they_share_and_keep_their_reports(pushed):
    _, root = pushed
    for name, beta in (("beta-0p5", 0.5), ("beta-0p25", 0.25)):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"kd.beta={beta}"], root)
    run(["dvc", "exp", "run", "--run-all", "-j", "1"], root)
    reports = {}
    for name in ("beta-0p5", "beta-0p25"):
        assert_only_reached_stages_ran(stages_run(run(["dvc", "queue", "logs", name], root).stdout), name)
        ref = git(root, "for-each-ref", "--format=%(objectname)", f"refs/exps/*/*/{name}").stdout.split()
        assert len(ref) == 1, (name, ref)
        reports[name] = git(root, "show", f"{ref[0]}:results/smoke/REPORT.md").stdout
        assert "| RGB (PrimKD) |" in reports[name], name
    assert reports["beta-0p5"] != reports["beta-0p25"]  # each commit holds its own experiment's report


@pytest.mark.integration
def test_a_workspace_experiment_reruns_what_it_reaches_and_main_comes_back_clean(pushed, tmp_path):
    root = copy_run(pushed[1], tmp_path / "workspace")
    # a value no queued experiment ran: the run cache holds no student for it (test order does not matter)
    assert_only_reached_stages_ran(stages_run(run(["dvc", "exp", "run", "-S", "kd.beta=0.75"], root).stdout),
                                   "workspace experiment")
    git(root, "checkout", "-q", "--", ".")  # back to the committed main: its params and dvc.lock
    run(["dvc", "checkout"], root)
    assert set(json.loads(run(["dvc", "status", "--json"], root).stdout)) <= {"resolve_params"}
    assert git(root, "status", "--porcelain").stdout == ""


def test_the_report_is_the_same_file_when_its_inputs_are(tmp_path, monkeypatch):
    """A rerun of the report stage on the same results writes the same bytes (figure1.pdf had its creation date in
    it), so dvc.lock does not change and a pulled clone's outputs stay valid."""
    from primkd.cli import main

    (tmp_path / "results").mkdir()
    digests = []
    for epoch in ("1700000000", "1800000000"):  # matplotlib dates its PDFs by SOURCE_DATE_EPOCH when it is set
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        out = tmp_path / f"report{epoch}"
        main(["report", "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--results",
              str(tmp_path / "results"), "--out-dir", str(out), "--report", str(out / "REPORT.md")])
        digests.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert Path("figure1.pdf") in digests[0]
    assert digests[0] == digests[1]
