#!/usr/bin/env bash
# Kubernetes Indexed Job contract test (issue #15): no control plane runs here, so this plays the
# Job controller's part with the commands the manifests actually contain.
#
#   scripts/drills/k8s_contract.sh            # CI: the tiny llama fixture stands in for the model
#   scripts/drills/k8s_contract.sh --smollm2  # the manifest's own model (SmolLM2 GGUF from the cache)
#
# 1. Validates scripts/cluster/k8s-indexed-job.yaml and k8s-merge-job.yaml with python's yaml module
#    (PyYAML) and checks the contract: completionMode Indexed, backoffLimitPerIndex, restartPolicy
#    Never, a ReadWriteMany PVC mounted by both Jobs, `--shards` equal to `completions`, `--out` on the
#    volume, `--resume`, no explicit index, the merge Job merging that same directory; and that the
#    excerpt in docs/cluster.md says what the file says.
# 2. Takes the containers' `command` and `env` from the manifests, mounts the volume at a temp dir
#    (every argument under the mountPath is remapped; the model and data are linked onto the
#    "volume"), and runs:
#    - the unsharded reference: the same command without --shards/--resume;
#    - every index with JOB_COMPLETION_INDEX=i set (SLURM_* and SURPRISAL_SHARD unset), in reverse
#      order, as pods may start in any order;
#    - a pod killed mid-shard (kill -9 after a checkpoint) and its retry, which must resume;
#    - a second pod for an index whose first pod is still running (frozen with SIGSTOP mid-shard, as
#      on a node that stopped reporting): it must fail on the output directory lock, naming the
#      directory and the holder's PID, and its retry after the first finished must be a no-op;
#    - a pod without JOB_COMPLETION_INDEX: must fail;
#    - the merge Job applied before the last index finished: must fail and write no summary;
#    - the merge Job, then scripts/drills/compare_runs.py: merged == unsharded (tokens_scored, floats to
#      1e-12 relative, token rows).
# Exit status 0 only if all of that holds.
#
# Environment: SURPRISAL_BIN (default target/release/surprisal), K8S_MODEL (the fixture unless
# --smollm2), K8S_SET (flag values to override in the shard command, default for the fixture
# "--max-chunks 160 --threads 1" so each shard lasts long enough to be killed mid-run; the
# --smollm2 run uses "--threads 1"), KEEP=1 keeps the work dir.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
t_start=$SECONDS
smollm2=0
case "${1:-}" in
"") ;;
--smollm2) smollm2=1 ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
bin="${SURPRISAL_BIN:-$root/target/release/surprisal}"
if [[ ! -x "$bin" ]]; then
    (cd "$root" && cargo build --release -q -p surprisal-cli)
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
datasets="${SURPRISAL_DATASETS:-$root/../shared/datasets}"
[[ -d "$datasets" ]] || datasets=/work/shared/datasets
if ((smollm2)); then
    model="${K8S_MODEL:-$(bash "$root/scripts/fetch_smollm2.sh")}"
    set_flags="${K8S_SET---threads 1}"
else
    model="${K8S_MODEL:-$root/crates/models/tests/fixtures/llama}"
    set_flags="${K8S_SET---max-chunks 160 --threads 1}"
fi
jobs_yaml="$root/scripts/cluster/k8s-indexed-job.yaml"
merge_yaml="$root/scripts/cluster/k8s-merge-job.yaml"

work="$(mktemp -d "${TMPDIR:-/tmp}/k8s_contract.XXXXXX")"
failed=1
cleanup() {
    local rc=$?
    # background pods of a failed run
    for p in ${bg_pids:-}; do kill -9 "$p" 2>/dev/null || true; done
    if ((rc != 0 || failed)) || [[ "${KEEP:-0}" == 1 ]]; then
        echo "k8s_contract: work dir kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
log() { printf '[k8s_contract %3ds] %s\n' $((SECONDS - t_start)) "$*"; }
fail() {
    echo "k8s_contract: FAIL: $*" >&2
    exit 1
}

# ---- 1. validate the manifests, extract the commands ----
python3 - "$jobs_yaml" "$merge_yaml" "$work/spec.sh" <<'PY' || fail "the manifests break the contract"
import shlex, sys
import yaml

jobs_path, merge_path, out_path = sys.argv[1:]
problems = []
def check(cond, msg):
    if not cond:
        problems.append(msg)

docs = [d for d in yaml.safe_load_all(open(jobs_path)) if d is not None]
merge_docs = [d for d in yaml.safe_load_all(open(merge_path)) if d is not None]
pvcs = [d for d in docs if d.get("kind") == "PersistentVolumeClaim"]
jobs = [d for d in docs if d.get("kind") == "Job"]
merges = [d for d in merge_docs if d.get("kind") == "Job"]
if len(pvcs) != 1 or len(jobs) != 1 or len(merges) != 1:
    sys.exit(f"expected one PVC and one Job in {jobs_path}, one Job in {merge_path}; "
             f"got {len(pvcs)}, {len(jobs)}, {len(merges)}")
pvc, job, merge = pvcs[0], jobs[0], merges[0]
claim = pvc["metadata"]["name"]
check("ReadWriteMany" in pvc["spec"].get("accessModes", []), "the PVC is not ReadWriteMany")

def pod(job, what):
    check(job.get("apiVersion") == "batch/v1", f"{what}: apiVersion is not batch/v1")
    spec = job["spec"]["template"]["spec"]
    check(spec.get("restartPolicy") == "Never", f"{what}: restartPolicy is not Never")
    cs = spec.get("containers", [])
    check(len(cs) == 1, f"{what}: expected one container")
    c = cs[0]
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = [m for m in c.get("volumeMounts", [])
              if vols.get(m["name"], {}).get("persistentVolumeClaim", {}).get("claimName") == claim]
    check(len(mounts) == 1, f"{what}: the container does not mount the PVC {claim}")
    env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
    return c, (mounts[0]["mountPath"].rstrip("/") if mounts else "/"), env

s = job["spec"]
check(s.get("completionMode") == "Indexed", "completionMode is not Indexed")
n = s.get("completions")
check(isinstance(n, int) and n >= 1, "completions is not a positive integer")
check(isinstance(s.get("backoffLimitPerIndex"), int) and s["backoffLimitPerIndex"] >= 1,
      "backoffLimitPerIndex is not set (per-index retries)")
c, mount, env = pod(job, "shard Job")
cmd = list(c.get("command", [])) + list(c.get("args", []))
check(cmd[:2] == ["surprisal", "eval"] or cmd[:2] == ["surprisal", "compare"],
      f"the shard command does not start with 'surprisal eval|compare': {cmd[:2]}")
def value(flag):
    return cmd[cmd.index(flag) + 1] if flag in cmd else None
check(value("--shards") == str(n), f"--shards {value('--shards')} is not completions = {n}")
out = value("--out")
check(out is not None and out.startswith(mount + "/"), f"--out {out} is not on the volume ({mount})")
check("--resume" in cmd, "no --resume: a retried pod would refuse its own half-written shard")
check("--shard" not in cmd and "SURPRISAL_SHARD" not in env and "JOB_COMPLETION_INDEX" not in env,
      "the index must come from Kubernetes (JOB_COMPLETION_INDEX), not from the manifest")
mc, mmount, menv = pod(merge, "merge Job")
mcmd = list(mc.get("command", [])) + list(mc.get("args", []))
check(mmount == mount, f"the merge Job mounts the volume at {mmount}, the shards at {mount}")
check(mcmd == ["surprisal", "merge", out], f"the merge command {mcmd} does not merge {out}")
# docs/cluster.md shows the Job condensed: it must say what the file says
import os, re
doc = os.path.join(os.path.dirname(jobs_path), "..", "..", "docs", "cluster.md")
shown = [d for b in re.findall(r"```yaml\n(.*?)```", open(doc).read(), re.S)
         for d in [yaml.safe_load(b)] if isinstance(d, dict) and d.get("kind") == "Job"]
check(len(shown) == 1, "docs/cluster.md should show the shard Job once")
for d in shown:
    dc = d["spec"]["template"]["spec"]["containers"][0]
    check(dc.get("command") == c.get("command") and dc.get("env") == c.get("env"),
          "docs/cluster.md shows another command or env than the manifest")
    for k in ("completionMode", "completions", "parallelism", "backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy"):
        check(d["spec"].get(k) == s.get(k), f"docs/cluster.md shows another {k} than the manifest")
if problems:
    sys.exit("\n".join(problems))
with open(out_path, "w") as f:
    f.write(f"shards={n}\nmount={shlex.quote(mount)}\nout={shlex.quote(out)}\n")
    f.write("shard_cmd=(" + " ".join(shlex.quote(a) for a in cmd) + ")\n")
    f.write("merge_cmd=(" + " ".join(shlex.quote(a) for a in mcmd) + ")\n")
    f.write("pod_env=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + ")\n")
    f.write("merge_env=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in menv.items()) + ")\n")
print(f"manifests OK: Indexed Job of {n} completions, backoffLimitPerIndex {s['backoffLimitPerIndex']}, "
      f"PVC {claim} at {mount}, merge of {out}")
PY
shards=0 mount="" out=""
shard_cmd=() merge_cmd=() pod_env=() merge_env=()
# shellcheck disable=SC1091
source "$work/spec.sh"

# ---- 2. the "volume" and the commands as they run in the pods ----
vol="$work/vol"
mkdir -p "$vol"
remap() { # remap ARG: a path under the mountPath moves to the local volume
    if [[ "$1" == "$mount"/* ]]; then printf '%s\n' "$vol${1#"$mount"}"; else printf '%s\n' "$1"; fi
}
value_of() { # value_of FLAG ARGS...
    local flag="$1"
    shift
    while (($#)); do
        [[ "$1" == "$flag" ]] && { printf '%s\n' "${2:-}"; return; }
        shift
    done
}
# the model and the data the manifest names, linked onto the volume (a different model keeps its
# own name, so the GGUF/HF-directory detection sees what it is)
m_arg="$(value_of --model "${shard_cmd[@]}")"
d_arg="$(value_of --data "${shard_cmd[@]}")"
if [[ "$(basename "$model")" != "$(basename "$m_arg")" ]]; then
    m_arg="$(dirname "$m_arg")/$(basename "$model")"
fi
mkdir -p "$(dirname "$(remap "$m_arg")")" "$(dirname "$(remap "$d_arg")")"
ln -s "$(cd "$(dirname "$model")" && pwd)/$(basename "$model")" "$(remap "$m_arg")"
data_src="$datasets/$(basename "$d_arg")"
[[ -f "$data_src" ]] || fail "the manifest's data $(basename "$d_arg") is not in $datasets"
ln -s "$data_src" "$(remap "$d_arg")"

read -r -a overrides <<<"$set_flags"
cmd=("$bin")
args=("${shard_cmd[@]:1}")
for ((i = 0; i < ${#args[@]}; i++)); do
    a="${args[$i]}"
    if [[ "$a" == --model ]]; then
        cmd+=(--model "$(remap "$m_arg")")
        i=$((i + 1))
        continue
    fi
    for ((j = 0; j + 1 < ${#overrides[@]}; j += 2)); do
        if [[ "$a" == "${overrides[$j]}" ]]; then
            cmd+=("$a" "${overrides[$((j + 1))]}")
            i=$((i + 1))
            continue 2
        fi
    done
    cmd+=("$(remap "$a")")
done
for ((j = 0; j + 1 < ${#overrides[@]}; j += 2)); do # flags the manifest lacks
    [[ " ${cmd[*]} " == *" ${overrides[$j]} "* ]] || cmd+=("${overrides[$j]}" "${overrides[$((j + 1))]}")
done
merge_run=("$bin")
for a in "${merge_cmd[@]:1}"; do merge_run+=("$(remap "$a")"); done
out_local="$(remap "$out")"
log "shard pod command: ${cmd[*]}"
log "merge pod command: ${merge_run[*]}"

# the unsharded reference: the pod command without --shards N, --resume and --out
ref_cmd=()
for ((i = 0; i < ${#cmd[@]}; i++)); do
    case "${cmd[$i]}" in
    --shards | --out) i=$((i + 1)) ;;
    --resume) ;;
    *) ref_cmd+=("${cmd[$i]}") ;;
    esac
done
# a pod: the container env from the manifest, JOB_COMPLETION_INDEX if given, nothing else shard-like
pod() { # pod INDEX|- LOGFILE [extra flags...]
    local idx="$1" logf="$2"
    shift 2
    local e=(env -u SLURM_ARRAY_TASK_ID -u SLURM_ARRAY_TASK_COUNT -u SURPRISAL_SHARD -u JOB_COMPLETION_INDEX "${pod_env[@]}")
    [[ "$idx" == - ]] || e+=("JOB_COMPLETION_INDEX=$idx")
    exec "${e[@]}" "${cmd[@]}" "$@" >>"$logf" 2>&1
}
shard_dir() { printf '%s/shard-%05d-of-%05d' "$out_local" "$1" "$shards"; }
mid_run() { # a checkpoint past the shard's first window (ids count from the corpus start), no summary
    local d
    d="$(shard_dir "$1")"
    [[ -f "$d/checkpoint.json" && ! -f "$d/summary.json" ]] &&
        python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); sys.exit(not (c["windows_done"] > int(sys.argv[2]) and not c["complete"]))' \
            "$d/checkpoint.json" "$(($1 * windows_total / shards))" 2>/dev/null
}
wait_mid_run() { # wait_mid_run INDEX PID
    local t=0
    until mid_run "$1"; do
        kill -0 "$2" 2>/dev/null || fail "pod $1 finished before it could be interrupted (make the shards longer: K8S_SET)"
        ((t++ < 600)) || fail "pod $1 wrote no checkpoint in 60 s"
        sleep 0.1
    done
}
last_error() { grep '^error' "$1" | tail -n 1; }
tree_sum() { (cd "$1" && find . -type f ! -name .surprisal.lock -exec sha256sum {} + | sort); }

log "unsharded reference"
"${ref_cmd[@]}" --out "$work/ref" >"$work/ref.log" 2>&1 || fail "the unsharded run failed: $(tail -n 3 "$work/ref.log")"
windows_total="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["windows"])' "$work/ref/summary.json")"

# a pod without an index must not run (nor guess index 0)
if (pod - "$work/noindex.log"); then
    fail "a pod without JOB_COMPLETION_INDEX ran: $(tail -n 2 "$work/noindex.log")"
fi
[[ ! -e "$out_local" ]] || [[ -z "$(ls -A "$out_local")" ]] || fail "a pod without an index wrote into $out_local"
log "pod without JOB_COMPLETION_INDEX refused: $(last_error "$work/noindex.log")"

bg_pids=""
problems=0
for ((i = shards - 1; i >= 0; i--)); do
    if ((i == 1)); then
        # the first pod of index 1 is killed mid-shard; the Job controller starts a new pod
        (pod 1 "$work/pod-1.log" --checkpoint-seconds 0) &
        p=$!
        bg_pids="$p"
        wait_mid_run 1 "$p"
        w="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["windows_done"])' "$(shard_dir 1)/checkpoint.json")"
        kill -9 "$p"
        wait "$p" 2>/dev/null || true
        bg_pids=""
        (pod 1 "$work/pod-1.log") || fail "the retried pod of index 1 failed: $(tail -n 3 "$work/pod-1.log")"
        if grep -q "resuming from checkpoint" "$work/pod-1.log"; then
            log "index 1: first pod killed (kill -9) with its checkpoint at window $w; the retry resumed: $(grep "resuming from checkpoint" "$work/pod-1.log" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g; s/.*INFO //')"
        else
            echo "MISMATCH index 1: the retried pod did not resume from the checkpoint" >&2
            problems=1
        fi
    elif ((i == 0)); then
        # two pods for index 0 at once: the second must fail fast on the lock, not write
        (pod 0 "$work/pod-0a.log" --checkpoint-seconds 0) &
        p=$!
        bg_pids="$p"
        wait_mid_run 0 "$p"
        # the first pod is frozen (SIGSTOP: a node that stopped reporting) so it surely still holds
        # the shard while the second one starts
        kill -STOP "$p"
        if (pod 0 "$work/pod-0b.log"); then
            echo "MISMATCH index 0: a second pod ran while the first held the shard" >&2
            problems=1
        elif ! last_error "$work/pod-0b.log" | grep -q "$(shard_dir 0).*PID $p\b"; then
            echo "MISMATCH index 0: the second pod's error does not name the shard directory and the holder's PID $p: $(last_error "$work/pod-0b.log")" >&2
            problems=1
        else
            log "index 0: a second pod while the first (PID $p) runs: refused: $(last_error "$work/pod-0b.log")"
        fi
        kill -CONT "$p"
        wait "$p" || fail "the first pod of index 0 failed: $(tail -n 3 "$work/pod-0a.log")"
        bg_pids=""
        before="$(tree_sum "$(shard_dir 0)")"
        (pod 0 "$work/pod-0b.log") || fail "the retried second pod of index 0 failed: $(tail -n 3 "$work/pod-0b.log")"
        if [[ "$before" != "$(tree_sum "$(shard_dir 0)")" ]]; then
            echo "MISMATCH index 0: the retry of a finished shard changed it" >&2
            problems=1
        else
            log "index 0: its retry after the first pod finished: a no-op (shard files unchanged)"
        fi
    else
        (pod "$i" "$work/pod-$i.log") || fail "pod $i failed: $(tail -n 3 "$work/pod-$i.log")"
        log "index $i: done"
    fi
    if ((i == 1)); then
        # all but index 0 done: a merge Job applied now must refuse
        if "${merge_run[@]}" >"$work/merge-early.log" 2>&1; then
            echo "MISMATCH the merge ran with index 0 missing" >&2
            problems=1
        elif [[ -e "$out_local/summary.json" ]]; then
            echo "MISMATCH the refused merge left $out_local/summary.json" >&2
            problems=1
        else
            log "merge with index 0 missing: refused: $(last_error "$work/merge-early.log")"
        fi
    fi
done

env "${merge_env[@]}" "${merge_run[@]}" >"$work/merge.log" 2>&1 || fail "the merge failed: $(tail -n 3 "$work/merge.log")"
log "merge Job command: done"
python3 "$root/scripts/drills/compare_runs.py" "$work/ref" "$out_local" --table || problems=1
((problems == 0)) || fail "the Indexed Job contract does not hold (see MISMATCH lines)"
failed=0
log "OK: $shards indexes (JOB_COMPLETION_INDEX) + merge == the unsharded run; $((SECONDS - t_start)) s"
