#!/usr/bin/env bash
# One prepared call for a lent GPU (issue #24): everything an H100/H200 should measure, in under 10 minutes.
#
# Parts, in this order, each under its own timeout inside a total time guard, so one failure or hang
# costs only its own figures:
#   cuda_tests           pytest -m cuda (tests/cuda: bf16 autocast, compile on buckets, SDPA, PKM, GPU->CPU checkpoint)
#   pretrain_throughput  benchmarks/pretrain_throughput.py, TWilBERT-Base, bf16, eager and --compile, vs HF on the same batches
#   predict_throughput   benchmarks/predict_throughput.py --device cuda, vs transformers' pipeline
#   time_to_quality      benchmarks/time_to_quality.py --device cuda --minutes M (held-out loss race against HF)
# Each part prints ONE JSON line on stdout: {"part", "status" ("ok" or "failed: why"), "seconds", "figures"};
# the lines also go to OUT/parts.jsonl and each part's log to OUT/<part>.log.
#
# --dry-run runs the same steps at toy sizes on CPU with the bundled sample (data/sample): the cuda tests
# skip there (the JSON says so) and the compiled pretrain run is left out (CPU inductor takes minutes).
# tests/benchmarks/test_gpu_suite.py runs the dry run, so the script cannot rot.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash benchmarks/gpu_suite.sh [--dry-run] [--out DIR] [--data DIR] [--work DIR] [--wheels DIR]
                                    [--budget SECONDS] [--race-minutes M] [--race-tasks LIST] [--parts LIST]

  --dry-run         toy sizes on CPU with data/sample (what `make test` runs); no GPU needed
  --out DIR         parts.jsonl and one log per part (default: $OUT if set, else ./gpu-suite-out)
  --data DIR        the tweets, laid out as ../shared/data (default: ../shared/data, else shared/data,
                    else .gpu/data in the repo: a lent machine gets only the repo and carried paths)
  --work DIR        caches (normalised text, vocabularies, shards, models; default /tmp/twilbert-gpu-suite,
                    OUT/work with --dry-run)
  --wheels DIR      pip-install these wheels (--no-index) into WORK/site first: packages the machine lacks
  --budget S        total time guard in seconds (default 570; a lent machine's call is 10 minutes)
  --race-minutes M  time_to_quality.py --minutes, training budget per system (default 1: the race trains
                    both systems, 2*M minutes plus its data stages, after the other parts of a 10-minute
                    call; for a longer race, a call of its own: --parts time_to_quality --race-minutes 3)
  --race-tasks L    time_to_quality.py --tasks (default '': no downstream fine-tuning, it does not fit)
  --parts L         comma list of parts to run (default: all four)

Prints one JSON line per part: {"part": ..., "status": "ok" | "failed: ...", "seconds": ..., "figures": {...}}.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY=0 OUTDIR=${OUT:-} DATA="" WORK="" WHEELS="" BUDGET=570 RACE_MIN=1 RACE_TASKS="" PARTS="cuda_tests,pretrain_throughput,predict_throughput,time_to_quality"
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY=1 ;;
    --out) OUTDIR=$2; shift ;;
    --data) DATA=$2; shift ;;
    --work) WORK=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --race-minutes) RACE_MIN=$2; shift ;;
    --race-tasks) RACE_TASKS=$2; shift ;;
    --parts) PARTS=$2; shift ;;
    *) echo "gpu_suite.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUTDIR=${OUTDIR:-gpu-suite-out}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
if ((DRY)); then WORK=${WORK:-$OUTDIR/work}; else WORK=${WORK:-/tmp/twilbert-gpu-suite}; fi
mkdir -p "$WORK"
cd "$REPO"
: >"$OUTDIR/parts.jsonl"
START=$SECONDS

# The Python that has torch: $PYTHON, else `python` (a venv), else `python3` (a lent machine's image).
PY=${PYTHON:-}
if [[ -z $PY ]]; then
  for candidate in python python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then PY=$candidate; break; fi
  done
fi
[[ -n $PY ]] || { echo "gpu_suite.sh: no python with torch on PATH (set PYTHON)" >&2; exit 2; }
if [[ -n $WHEELS ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl >&2
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
"$PY" - >&2 <<'EOF' || true
import importlib.util, sys, torch
missing = [m for m in ("polars", "emoji", "sentencepiece", "pyarrow", "sklearn", "safetensors", "transformers", "pytest")
           if importlib.util.find_spec(m) is None]
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"gpu_suite: {sys.executable} (python {sys.version.split()[0]}), torch {torch.__version__}, {gpu}; "
      f"missing modules: {', '.join(missing) or 'none'}")
EOF

# The tweets. The dry run always uses the bundled sample, in the ../shared/data layout the benchmarks read.
if ((DRY)); then
  DATA=$WORK/sample-data
  mkdir -p "$DATA/twilbert_reply_pairs_es" "$DATA/tass2020_sentiment_es" "$DATA/stance"
  cp data/sample/pairs.tsv "$DATA/twilbert_reply_pairs_es/pairs.tsv"
  cp data/sample/tasks/sentiment/*.tsv "$DATA/tass2020_sentiment_es/"
  cp data/sample/tasks/stance/*.tsv "$DATA/stance/"
elif [[ -z $DATA ]]; then
  for candidate in ../shared/data shared/data .gpu/data; do
    if [[ -d $candidate ]]; then DATA=$(cd "$candidate" && pwd); break; fi
  done
fi

# emit PART STATUS SECONDS FIGURES_JSON: one line on stdout and in parts.jsonl
emit() {
  "$PY" -c 'import json, sys; print(json.dumps({"part": sys.argv[1], "status": sys.argv[2], "seconds": round(float(sys.argv[3]), 1), "figures": json.loads(sys.argv[4])}))' \
    "$1" "$2" "$3" "$4" | tee -a "$OUTDIR/parts.jsonl"
}

# The final JSON line of a log ("null" when there is none).
last_json() {
  "$PY" -c '
import json, sys
for line in reversed(open(sys.argv[1], errors="replace").read().splitlines()):
    try:
        value = json.loads(line)
    except ValueError:
        continue
    if isinstance(value, dict):
        print(json.dumps(value)); break
else:
    print("null")' "$1"
}

# Seconds a part may run: its own limit, cut to what the total guard leaves after reserving `later`.
allowance() { # OWN LATER
  local left=$((BUDGET - (SECONDS - START) - $2))
  ((left < $1)) && echo "$left" || echo "$1"
}

# run_logged LIMIT LOG CMD...: appends the run's output to LOG; sets RC (124: timed out), TOOK and
# RESULT (the run's final JSON line, "null" when it printed none)
run_logged() {
  local limit=$1 log=$2 t0=$SECONDS
  shift 2
  echo "+ $*" >>"$log"
  set +e
  timeout --kill-after=10 "$limit" "$@" >"$log.run" 2>&1
  RC=$?
  set -e
  TOOK=$((SECONDS - t0))
  cat "$log.run" >>"$log"
  RESULT=$(last_json "$log.run")
  rm -f "$log.run"
}

why() { # RC LIMIT LOG: the failure reason of a run
  if (($1 == 124 || $1 == 137)); then echo "timeout after $2 s"; else echo "exit $1: $(grep -v '^\s*$' "$3" | tail -n1 | cut -c1-160)"; fi
}

emit_run() { # PART LIMIT LOG: the JSON line of a part that is one run_logged run
  local result=$RESULT status=ok
  if ((RC != 0)) || [[ $result == null ]]; then status="failed: $(why "$RC" "$2" "$3")"; result='{}'; fi
  emit "$1" "$status" "$TOOK" "$result"
}

wants() { [[ ",$PARTS," == *",$1,"* ]]; }

budget_spent() { # PART
  emit "$1" "failed: the suite's time budget ($BUDGET s) is spent" 0 '{}'
}

# ---------------------------------------------------------------------------------------------- 1
part_cuda_tests() {
  local log=$OUTDIR/cuda_tests.log limit xml=$WORK/cuda_tests.xml
  limit=$(allowance 150 330)
  ((limit > 10)) || { budget_spent cuda_tests; return; }
  rm -f "$xml"
  run_logged "$limit" "$log" "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/cuda --junitxml="$xml"
  local figures
  figures=$("$PY" -c '
import json, sys, xml.etree.ElementTree as ET
try:
    suite = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(json.dumps({})); sys.exit()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
cases = suite.findall("testcase")
def outcome(c):
    for tag in ("failure", "error", "skipped"):
        if c.find(tag) is not None:
            return tag
    return "passed"
counts = {k: sum(outcome(c) == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
reasons = sorted({c.find("skipped").get("message", "") for c in cases if outcome(c) == "skipped"})
failed = [c.get("name") for c in cases if outcome(c) in ("failure", "error")]
print(json.dumps({"passed": counts["passed"], "failed": counts["failure"] + counts["error"], "skipped": counts["skipped"],
                  "skip_reasons": reasons, "failed_tests": failed}))' "$xml")
  local status=ok
  if ((RC != 0)); then
    status="failed: $(why "$RC" "$limit" "$log")"
  elif ((!DRY)) && [[ $figures == *'"passed": 0'* ]]; then
    status="failed: no cuda test ran on this machine (all skipped)"
  fi
  emit cuda_tests "$status" "$TOOK" "$figures"
}

# ---------------------------------------------------------------------------------------------- 2
part_pretrain_throughput() {
  local log=$OUTDIR/pretrain_throughput.log t0=$SECONDS status=ok figures="{}" limit variant
  [[ -n $DATA ]] || { emit pretrain_throughput "failed: no tweets (pass --data)" 0 '{}'; return; }
  local common=(--data-dir "$DATA" --workdir "$WORK/pretrain")
  if ((DRY)); then
    common+=(--preset small --device cpu --precision bf16 --vocab-size 400 --batch-size 8 --steps 2 --warmup 1 --threads 1)
  else
    common+=(--preset base --device cuda --precision bf16 --steps 40)
  fi
  for variant in eager compiled; do
    local args=("${common[@]}") own=120 later=200
    if [[ $variant == compiled ]]; then
      if ((DRY)); then
        figures=$("$PY" -c 'import json, sys; f = json.loads(sys.argv[1]); f["compiled"] = {"skipped": "dry run: CPU inductor compilation takes minutes"}; print(json.dumps(f))' "$figures")
        continue
      fi
      args+=(--compile --warmup 20 --no-longest) own=180 later=180
    elif ((!DRY)); then
      args+=(--warmup 5)
    fi
    limit=$(allowance "$own" "$later")
    if ((limit <= 10)); then status="failed: $variant: the suite's time budget is spent"; continue; fi
    run_logged "$limit" "$log" "$PY" benchmarks/pretrain_throughput.py "${args[@]}"
    local result=$RESULT
    if ((RC != 0)) || [[ $result == null ]]; then
      [[ $status == ok ]] && status="failed: $variant: $(why "$RC" "$limit" "$log")"
      result=$("$PY" -c 'import json, sys; print(json.dumps({"failed": sys.argv[1]}))' "$(why "$RC" "$limit" "$log")")
    fi
    figures=$("$PY" -c 'import json, sys; f = json.loads(sys.argv[1]); f[sys.argv[2]] = json.loads(sys.argv[3]); print(json.dumps(f))' "$figures" "$variant" "$result")
  done
  emit pretrain_throughput "$status" $((SECONDS - t0)) "$figures"
}

# ---------------------------------------------------------------------------------------------- 4 (runs third)
part_predict_throughput() {
  local log=$OUTDIR/predict_throughput.log limit
  [[ -n $DATA ]] || { emit predict_throughput "failed: no tweets (pass --data)" 0 '{}'; return; }
  local args=(--data-dir "$DATA" --workdir "$WORK/predict")
  if ((DRY)); then
    args+=(--device cpu --preset small --vocab-size 400 --train-tweets 64 --max-len 32 --tweets 32 --quality-tweets 32
      --repeats 1 --hf-batch-sizes 8 --no-int8 --no-ort --threads 1)
  else
    args+=(--device cuda --preset base --tweets 2000 --repeats 2 --hf-batch-sizes 1 8 64)
  fi
  limit=$(allowance 150 120)
  ((limit > 10)) || { budget_spent predict_throughput; return; }
  run_logged "$limit" "$log" "$PY" benchmarks/predict_throughput.py "${args[@]}"
  emit_run predict_throughput "$limit" "$log"
}

# ---------------------------------------------------------------------------------------------- 3 (runs last: what is left)
part_time_to_quality() {
  local log=$OUTDIR/time_to_quality.log limit
  local args=(--workdir "$WORK/race")
  if ((DRY)); then
    args=(--dry-run "${args[@]}")
  else
    [[ -n $DATA ]] || { emit time_to_quality "failed: no tweets (pass --data)" 0 '{}'; return; }
    args=(--device cuda --minutes "$RACE_MIN" "${args[@]}" --tasks "$RACE_TASKS")
    [[ $DATA -ef ../shared/data ]] || args+=(--data-dir "$DATA")
  fi
  limit=$(allowance 600 0)
  ((limit > 10)) || { budget_spent time_to_quality; return; }
  run_logged "$limit" "$log" "$PY" benchmarks/time_to_quality.py "${args[@]}"
  for f in "$WORK"/race/race/heldout_loss.png "$WORK"/race/race/curve.json; do  # the plot and curve come back with OUT
    [[ -f $f ]] && cp "$f" "$OUTDIR/time_to_quality_$(basename "$f")"
  done
  emit_run time_to_quality "$limit" "$log"
}

for part in cuda_tests pretrain_throughput predict_throughput time_to_quality; do
  wants "$part" && "part_$part"
done
echo "gpu_suite: $((SECONDS - START)) s in all; lines in $OUTDIR/parts.jsonl" >&2
