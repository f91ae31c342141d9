"""Every shell command README.md shows works as written: it is run here (in README order, in a git copy
of the repo with tiny settings), or listed in COVERED with the reason and the test that runs it.

The listing test is quick and fails when the README gains a command that is in neither list (or a
list names one the README no longer has); the run is slow (a tiny `dvc repro`, then the walk-throughs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.readme_commands import readme_commands

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Run here, in this order, in the copy the `project` fixture made (it has run `dvc repro`, i.e. `make repro`).
RUN = [
    # Train on your own tweets
    "cp data/sample/pairs.tsv data/corpora/my_pairs.tsv",
    "git add data/corpora/my_pairs.tsv",
    "dvc exp run -n my-corpus -S 'data.pairs=[data/corpora/my_pairs.tsv]' -S 'data.tweets=[]'",
    "dvc exp show --md --only-changed",
    # Add a task (the YAML block of that section goes into params.yaml before its `dvc repro`)
    "mkdir -p data/tasks/polarity",
    "cp data/sample/tasks/sentiment/train.tsv data/sample/tasks/sentiment/dev.tsv data/sample/tasks/sentiment/test.tsv data/tasks/polarity/",
    "dvc repro",
    "dvc metrics show reports/finetune/polarity/metrics.json",
    'echo "qué buen día" | twilbert predict -m models/finetune/polarity',
    # Using a trained model (tweets.tsv and pairs.jsonl: the fixture writes two rows each)
    'echo "qué buen día jajaja 😂" | twilbert predict --model models/finetune/sentiment',
    "twilbert predict -m models/finetune/sentiment -i tweets.tsv --text-column text --id-column id -o preds.jsonl",
    "twilbert predict -m models/finetune/stance -i pairs.jsonl --text-column text --aux-column target",
    "twilbert predict -m models/finetune/sentiment -i tweets.tsv --text-column text --precision bf16 -o preds.jsonl",
    "twilbert predict -m models/finetune/sentiment -i tweets.tsv --text-column text --precision int8 -o preds.jsonl",
    "twilbert embed -m models/pretrain/final -i tweets.tsv --text-column text --pooling mean -o vectors.arrow",
    "twilbert export-hf -m models/pretrain/final -o exports/twilbert-hf",
    # Parameters, Compare experiments
    "dvc exp show --md",
    "dvc exp show --md --only-changed --keep 'finetuning\\.(lr|batch_size)' --keep 'f1_macro'",
    "twilbert compare --task sentiment -o reports/grid",
    # Plots
    "dvc plots show",
]

# Not run here: why, and which test runs it (or its recipe).
COVERED = {
    "make repro": "its recipe (`dvc repro` in a git copy) is the `project` fixture; also tests/e2e/test_dvc_pipeline.py",
    "make test": "runs this very suite",
    "make mlflow-ui": "a server that runs until stopped; the URL it prints: tests/pipeline/test_tracking_ui.py::test_ui_url_opens_the_experiment_on_its_runs",
    "make serve RUN=<run_id>": "tests/inference/test_pyfunc.py::test_logged_model_loads_and_serves (runs the README's lines as written)",
    "curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{\"dataframe_records\": [{\"text\": \"qué buen día\"}, {\"text\": \"odio los lunes\"}]}'":
        "tests/inference/test_pyfunc.py::test_logged_model_loads_and_serves",
    "twilbert import-hf -m /path/to/a/spanish-bert -o models/imported --max-len 48":
        "a placeholder path; tests/inference/test_hf.py::test_import_prints_a_model_section_that_params_yaml_accepts",
    "dvc exp run -S model.n_encoders=6": "a second pre-training; tests/e2e/test_dvc_pipeline.py::test_dvc_exp_run_records_the_variant_in_dvc_and_mlflow",
    "dvc exp run --queue -S 'finetuning.lr=1e-5,5e-5,1e-4' -S 'finetuning.batch_size=16,32' -S 'finetuning.seeds=[1,2,3]'":
        "18 fine-tuning runs; tests/e2e/test_dvc_pipeline.py::test_queued_grid_runs_every_point_and_reports_failures",
    "dvc queue start -j 1": "tests/e2e/test_dvc_pipeline.py::test_queued_grid_runs_every_point_and_reports_failures",
    "dvc queue status": "tests/e2e/test_dvc_pipeline.py::test_queued_grid_runs_every_point_and_reports_failures",
    "dvc exp diff <exp-a> <exp-b> --md": "placeholders for two experiment names; DVC's own command",
    "dvc exp run -n twilbert-base $(twilbert preset twilbert-base)":
        "a recipe for a real corpus (a 30k vocabulary cannot be learned from the sample); tests/pipeline/test_presets.py",
    "dvc exp run -n base-94m $(twilbert preset twilbert-base)": "the same, on a GPU; tests/pipeline/test_presets.py",
    "dvc exp run -n base-94m $(twilbert preset twilbert-base) -S impl.n_gpus=8":
        "8 GPUs; tests/pipeline/test_presets.py and tests/train/test_pretrain_stage.py::test_n_gpus_2_relaunches_under_torchrun_as_the_module",
    "torchrun --nnodes=2 --nproc_per_node=8 --node_rank=$NODE_RANK --rdzv_backend=c10d --rdzv_endpoint=$MASTER_ADDR:29500 --rdzv_id=twilbert -m pipeline.cli pretrain --params params.yaml":
        "two machines; tests/train/test_pretrain_ddp.py (two CPU processes under torchrun)",
    # Continue from RoBERTuito / XLM-T: the hub is not reachable from the tests; the same path on a RoBERTa
    # (and a cls classifier) made locally:
    "hf download pysentimiento/robertuito-base-uncased --local-dir hf/robertuito": "the Hugging Face hub; "
        "tests/inference/test_hf_roberta_cli.py::test_roberta_import_pretrain_finetune_predict_export",
    "python -c \"from transformers import AutoModelForMaskedLM as M; M.from_pretrained('hf/robertuito').save_pretrained('hf/robertuito')\"":
        "converts the downloaded checkpoint; tests/inference/test_hf_roberta.py (safetensors checkpoints made locally)",
    "twilbert import-hf -m hf/robertuito -o models/imported --max-len 48":
        "tests/inference/test_hf_roberta_cli.py::test_roberta_import_pretrain_finetune_predict_export",
    "twilbert export-hf -m models/pretrain/final -o exports/robertuito-tweets":
        "after the import above; tests/inference/test_hf_roberta_cli.py::test_roberta_import_pretrain_finetune_predict_export",
    "twilbert export-hf -m models/finetune/sentiment -o exports/sentiment-hf": "needs finetuning.collapse_mode: cls; "
        "tests/inference/test_hf_classifier.py::test_a_roberta_classifier_on_raw_tweets_in_pipeline_matches_twilbert_predict",
    "python -c \"from transformers import pipeline; print(pipeline('text-classification', model='exports/sentiment-hf', truncation=True)('@Pepe JAJAJA no me lo puedo creer 😂 https://t.co/x'))\"":
        "tests/inference/test_hf_classifier.py::test_a_roberta_classifier_on_raw_tweets_in_pipeline_matches_twilbert_predict",
    "bash benchmarks/gpu_suite.sh --out gpu-suite-out": "needs a GPU (10 min); its dry run is tests/benchmarks/test_gpu_suite.py",
    "bash benchmarks/gpu_suite.sh --dry-run --out /tmp/gpu-dry":
        "tests/benchmarks/test_gpu_suite.py::test_dry_run_prints_one_json_line_per_part",
    "make plots": "needs the venv the Makefile makes; its recipe: tests/pipeline/test_plots.py::test_make_plots_page_renders_offline",
    "python3.11 -m venv .venv": "installation (what `make install` does; CI installs from a fresh clone)",
    '.venv/bin/pip install -c constraints.txt -e ".[dev]"': "installation (what `make install` does; CI installs from a fresh clone)",
}


def test_every_readme_command_is_run_or_listed():
    documented = readme_commands(REPO / "README.md")
    unlisted = [c for c in documented if c not in RUN and c not in COVERED]
    assert not unlisted, f"README commands neither run by this test nor listed in COVERED: {unlisted}"
    stale = [c for c in [*RUN, *COVERED] if c not in documented]
    assert not stale, f"listed here but no longer in README.md: {stale}"
    assert not set(RUN) & set(COVERED)


def test_the_command_extractor():
    from tests.docs.readme_commands import commands

    md = "x\n```bash\na --b \\\n   c   # note\n\n# only a comment\ncat > f <<'EOF'\nhi # kept\nEOF\n```\n```\n$ d '#x'\nnot a command\n```\n```yaml\nk: v\n```\n"
    assert commands(md) == ["a --b c", "cat > f <<'EOF'\nhi # kept\nEOF", "d '#x'"]


def _yaml_block(section: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```yaml\n(.*?)```", body, re.S).group(1)


def _run(cmd: str, cwd: Path, env: dict, timeout: int = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd!r} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git copy of the repo's tracked files with shorter training (everything else as shipped), after
    `dvc repro`: where a new user stands after `make repro`."""
    from ruamel.yaml import YAML

    dst = tmp_path_factory.mktemp("readme")
    files = subprocess.run(["git", "ls-files", "--cached"], cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
    for f in files:
        if (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    yaml = YAML()
    params = yaml.load((dst / "params.yaml").read_text())
    params["training"]["epochs"] = 1
    params["finetuning"]["epochs"] = 1
    params["evaluate"]["pll_sentences"] = 5
    with open(dst / "params.yaml", "w") as f:
        yaml.dump(params, f)
    (dst / "tweets.tsv").write_text("id\ttext\n1\tqué buen día jajaja\n2\todio los lunes @ana\n", encoding="utf-8")
    (dst / "pairs.jsonl").write_text(
        "".join(json.dumps({"text": t, "target": "La semana de 4 días"}, ensure_ascii=False) + "\n" for t in ("a favor", "ni de broma")),
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(dst),  # `twilbert` runs the copy's code
        "MLFLOW_TRACKING_URI": f"sqlite:///{dst / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("DVC_EXP_NAME", None)
    for cmd in ("git init -q", "git add -A", "git commit -qm copy", "dvc repro"):
        _run(cmd, dst, env)
    return dst, env


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two tiny pipelines (make repro, then the own-corpus experiment) and a task
def test_readme_commands_run_as_written(project):
    root, env = project
    outputs = {}
    for cmd in RUN:
        if cmd == "dvc repro":  # Add a task: the README's YAML block under `tasks:`
            params = (root / "params.yaml").read_text()
            assert "\ntasks:\n" in params
            (root / "params.yaml").write_text(params.replace("\ntasks:\n", "\ntasks:\n" + _yaml_block("Add a task"), 1))
        outputs[cmd] = _run(cmd, root, env).stdout
    stats = json.loads((root / "data/normalized/stats.json").read_text())
    assert "data/corpora/my_pairs.tsv" in json.dumps(stats)  # the own-corpus walk-through trained on it
    assert json.loads(outputs['echo "qué buen día" | twilbert predict -m models/finetune/polarity'])["label"] in {"N", "NEU", "P"}
    assert "Running stage 'finetune@polarity'" in outputs["dvc repro"] and "Running stage 'finetune@sentiment'" not in outputs["dvc repro"]
    assert (root / "dvc_plots/index.html").is_file()
