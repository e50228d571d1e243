"""Every out reaches a queued experiment's temporary workspace: cached by DVC, or kept in git.

Why: `dvc exp run --queue` / `--temp` builds a fresh workspace from git and the DVC cache. An out
with `cache: false` that git ignores is missing there, so its stage and everything after it
re-run: the Table 4 grid re-ran the whole demo (splits, pre-training, ...) for each of its ten
experiments while data/splits/*.meta.json and the resume checkpoints were such outs.
"""

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _uncached_outs():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, st in stages.items():
        body = st.get("do", st)
        for section in ("outs", "metrics", "plots"):
            for out in body.get(section, []) or []:
                if isinstance(out, dict):
                    (path, opts), = out.items()
                    if opts and opts.get("cache") is False:
                        yield name, path.replace("${key}", "x").replace("${item.dataset}", "x")


# stages that re-run in any fresh workspace anyway, in seconds, with outputs of constant content
# (so nothing after them re-runs): the params gate, and the download that re-hashes its archive
RERUN_ANYWAY = {"check_params", "download"}


def test_no_uncached_out_is_ignored_by_git():
    outs = list(_uncached_outs())
    assert outs  # reports, metrics, dvclive folders
    # one git call for all paths: it prints those that .gitignore matches
    res = subprocess.run(["git", "check-ignore", *{path for _, path in outs}], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode in (0, 1), res.stderr  # 1: none ignored
    by_git = set(res.stdout.splitlines())
    ignored = [(stage, path) for stage, path in outs if stage not in RERUN_ANYWAY and path in by_git]
    assert not ignored, f"cache: false outs that git ignores (missing in --temp workspaces): {ignored}"
