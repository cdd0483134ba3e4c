#!/usr/bin/env bash
# Slurm drill (issue #15): a sharded run through a real, single-node Slurm must equal one machine's run.
#
#   scripts/drills/slurm_drill.sh              # CI: the tiny llama fixture, 4 shards (well under 2 minutes)
#   scripts/drills/slurm_drill.sh --smollm2    # the note: SmolLM2-135M Q4_1, WikiText-2 test, chunks 512 x 40
#
# 1. Stands up Slurm from Debian's packages (slurmctld, slurmd, slurm-client, munge) in a private work
#    dir: its own munge key and socket, free TCP ports, NodeName=localhost NodeAddr=127.0.0.1 with the
#    CPUs/memory `slurmd -C` reports, proctrack/linuxproc, task/none. No systemd: daemons are started
#    directly and stopped by PID on exit (trap), after cancelling whatever is still queued.
# 2. Runs the unsharded reference (`surprisal eval ... --out REF`) under bash's `time`.
# 3. Submits scripts/cluster/shard.sbatch as `sbatch --array=0-3` (`--shards 4 --out DIR --resume`)
#    and scripts/cluster/merge.sbatch with `--dependency=afterok:<array>`.
# 4. Interrupts tasks 0 and 1 mid-run, each as soon as its checkpoint is past the shard's first
#    window and there is no summary yet:
#    - requeue: `scontrol requeue` on the running task (Slurm kills it and queues it again);
#    - hard: `kill -9` of the task's surprisal process (the task FAILS, as after an OOM kill), then
#      `scontrol requeue` of the failed task. A failed task leaves an `afterok:<array>` dependency
#      never satisfiable, even after the retry succeeds, so the drill re-points the merge job at the
#      tasks (`scontrol update ... Dependency=afterok:A_0:A_1:...`), as docs/cluster.md tells users.
#    A requeued task starts with a begin time 2 minutes out; the drill releases it
#    (`scontrol update ... StartTime=now`). Each retried attempt must log that it resumed.
# 5. Waits for the merge job, checks every task COMPLETED (the interrupted ones with Restarts=1) and
#    compares DIR with REF (scripts/drills/compare_runs.py: tokens_scored equal, floats to 1e-12 relative,
#    the token and word rows). Then requeues a finished task: it must be a no-op (every file of the
#    shard unchanged but the lock file, which names the last holder's PID).
# 6. Prints the CPU time of every attempt (user+sys) and the ratio of the shards' total to the
#    unsharded run's, beside the model load (an eval of one line) and, for a `--max-chunks K` run, the
#    run's start-up (model load + tokenizing the corpus) from a `--max-chunks 1` run: cpu(k) = s + k*c.
#
# Exit status 0 only if everything matched. Every wait has a deadline (the bring-up 30 s, the whole
# drill DRILL_TIMEOUT, default 170 s; 1800 s with --smollm2): a broken scheduler fails with the
# daemon and job logs printed instead of hanging. The node needs 2 CPUs for the interruptions.
#
# Environment: SURPRISAL_BIN (default target/release/surprisal, built if missing), DRILL_MODEL,
# DRILL_DATA, DRILL_ARGS (eval flags), DRILL_SHARD_ARGS (extra flags of the shards only, default
# "--checkpoint-seconds 0" unless DRILL_KILL=none), DRILL_SHARDS (4), DRILL_KILL (both | requeue | hard | none),
# DRILL_TIMEOUT (seconds), DRILL_REF (reuse an unsharded run's --out dir made with the same flags) and
# DRILL_REF_CPU (its CPU seconds), KEEP=1 keeps the work dir (kept anyway on failure).
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

datasets="${SURPRISAL_DATASETS:-$root/../shared/datasets}"
[[ -d "$datasets" ]] || datasets=/work/shared/datasets
if ((smollm2)); then
    model="${DRILL_MODEL:-$(bash "$root/scripts/fetch_smollm2.sh")}"
    data="${DRILL_DATA:-$datasets/wikitext-2-raw-v1.test.raw}"
    read -r -a flags <<<"${DRILL_ARGS:---protocol chunks --window 512 --max-chunks 40 --per-token jsonl}"
    timeout_s="${DRILL_TIMEOUT:-1800}" # about 150 s CPU per run on one thread
else
    model="${DRILL_MODEL:-$root/crates/models/tests/fixtures/llama}"
    data="${DRILL_DATA:-$root/crates/cli/tests/fixtures/kill_resume.txt}"
    # stride 16: 1448 windows of one batch each, so the shards last several seconds
    read -r -a flags <<<"${DRILL_ARGS:---protocol sliding --window 128 --stride 16 --batch-size 1 --per-token jsonl --words}"
    timeout_s="${DRILL_TIMEOUT:-170}"
fi
shards="${DRILL_SHARDS:-4}"
kill_mode="${DRILL_KILL:-both}"
# the shards checkpoint after every batch (hidden flag), so an interrupted one has something to resume
default_extra="--checkpoint-seconds 0"
[[ "$kill_mode" != none ]] || default_extra=""
read -r -a shard_extra <<<"${DRILL_SHARD_ARGS-$default_extra}"
bin="${SURPRISAL_BIN:-$root/target/release/surprisal}"
deadline=$((t_start + timeout_s))
case "$kill_mode" in both | requeue | hard | none) ;; *)
    echo "DRILL_KILL must be both, requeue, hard or none" >&2
    exit 2
    ;;
esac
if ((shards < 3)) && [[ "$kill_mode" != none ]]; then
    echo "DRILL_SHARDS must be at least 3 when shards are interrupted" >&2
    exit 2
fi
for cmd in munged mungekey slurmctld slurmd sbatch scontrol squeue sinfo python3; do
    command -v "$cmd" >/dev/null || {
        echo "slurm_drill: $cmd not found (apt-get install slurmctld slurmd slurm-client munge python3)" >&2
        exit 1
    }
done
if [[ ! -x "$bin" ]]; then
    (cd "$root" && cargo build --release -q -p surprisal-cli)
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
# every run uses one thread: the tasks get one CPU each, and CPU times compare like with like
[[ " ${flags[*]} " == *" --threads "* ]] || flags+=(--threads 1)

log() { printf '[slurm_drill %3ds] %s\n' $((SECONDS - t_start)) "$*"; }

# ---- work dir and cleanup ----
work="$(mktemp -d "${TMPDIR:-/tmp}/slurm_drill.XXXXXX")"
chmod 755 "$work" # munged wants its socket's directories searchable by all
mkdir -p "$work"/{key,run,state,spool,log,cpu,jobs}
chmod 700 "$work/key"
export SLURM_CONF="$work/slurm.conf"
daemons_up=0
failed=1

dump_logs() {
    echo "==== slurm_drill failed after $((SECONDS - t_start)) s; work dir kept: $work" >&2
    if ((daemons_up)); then
        timeout 10 squeue -a -o '%i %T %r %S' >&2 || true
    fi
    for f in "$work"/log/*.log "$work"/jobs/*.out "$work"/*.stderr; do
        [[ -f "$f" ]] || continue
        echo "---- $f (last 40 lines)" >&2
        tail -n 40 "$f" >&2
    done
}

stop_pid() { # stop_pid NAME PIDFILE: TERM, up to 5 s, then KILL
    local pid
    [[ -s "$2" ]] || return 0
    pid="$(cat "$2")"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "slurm_drill: $1 ($pid) ignored SIGTERM, sending SIGKILL" >&2
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc != 0 || failed)); then
        dump_logs
        KEEP=1
    fi
    if ((daemons_up)); then
        # cancel what is left so no job step outlives its slurmd
        local jobs
        jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')" || true
        if [[ -n "${jobs// /}" ]]; then
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 50); do
                [[ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ]] && break
                sleep 0.2
            done
        fi
    fi
    stop_pid slurmd "$work/run/slurmd.pid"
    stop_pid slurmctld "$work/run/slurmctld.pid"
    stop_pid munged "$work/run/munged.pid"
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "slurm_drill: work dir kept: $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "slurm_drill: FAIL: $*" >&2
    exit 1
}

wait_until() { # wait_until WHAT CMD...: polls CMD every 0.1 s until it succeeds or the deadline passes
    local what="$1" end="${wait_end:-$deadline}"
    shift
    ((end <= deadline)) || end=$deadline
    until "$@"; do
        ((SECONDS < end)) || fail "timed out waiting for $what"
        sleep 0.1
    done
}

# ---- 1. Slurm ----
mungekey --create --keyfile="$work/key/munge.key" 2>/dev/null ||
    { dd if=/dev/urandom of="$work/key/munge.key" bs=1024 count=1 status=none && chmod 400 "$work/key/munge.key"; }
munged --key-file="$work/key/munge.key" --socket="$work/run/munge.sock" \
    --pid-file="$work/run/munged.pid" --log-file="$work/log/munged.log" \
    --seed-file="$work/run/munged.seed" --num-threads=2 ||
    fail "munged did not start"
wait_until "munged" test -S "$work/run/munge.sock"
munge -n -S "$work/run/munge.sock" | unmunge -S "$work/run/munge.sock" >/dev/null ||
    fail "munge credential round trip failed"

read -r ctld_port slurmd_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
node_line="$(slurmd -C | head -n 1)"
cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")"
mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")"
[[ -n "$cpus" && -n "$mem" ]] || fail "cannot read CPUs/RealMemory from 'slurmd -C': $node_line"
cat >"$SLURM_CONF" <<EOF
# written by scripts/drills/slurm_drill.sh
ClusterName=drill
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
AuthInfo=socket=$work/run/munge.sock
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=3600
MailProg=/bin/true
KillWait=5
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=drill Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -i -f "$SLURM_CONF" || fail "slurmctld did not start"
daemons_up=1
slurmd -N localhost -f "$SLURM_CONF" || fail "slurmd did not start"
node_idle() { [[ "$(timeout 5 sinfo -h -n localhost -o %T 2>/dev/null)" == idle ]]; }
# bring-up takes a few seconds; a broken one fails after 30 s
wait_end=$((SECONDS + 30)) wait_until "the node to be idle (sinfo)" node_idle
log "Slurm up: slurmctld $(cat "$work/run/slurmctld.pid"), slurmd $(cat "$work/run/slurmd.pid"), munged $(cat "$work/run/munged.pid"); node localhost CPUs=$cpus RealMemory=$mem; ports $ctld_port/$slurmd_port"

# ---- 2. unsharded reference, and the start-up cost ----
cpu_of() { # cpu_of FILE: total user+sys seconds of the `time` lines in FILE
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "user" || kv[1] == "sys") s += kv[2] } } END { printf "%.3f", s }' "$1"
}
timed() { # timed CPUFILE LABEL CMD...: runs CMD under bash's time, one line appended to CPUFILE
    local file="$1" label="$2"
    shift 2
    local TIMEFORMAT="$label user=%3U sys=%3S wall=%3R"
    { time "$@" 2>&3; } 3>&2 2>>"$file"
}
if [[ -n "${DRILL_REF:-}" ]]; then
    # a reference run made earlier with the same model, data and flags (saves its CPU time)
    [[ -f "$DRILL_REF/summary.json" ]] || fail "DRILL_REF=$DRILL_REF holds no summary.json"
    cp -a "$DRILL_REF" "$work/ref"
    cpu_ref="${DRILL_REF_CPU:-}"
    log "unsharded reference: reused $DRILL_REF (CPU ${cpu_ref:-unknown} s)"
else
    log "unsharded reference run: $(basename "$model"), $(basename "$data"), ${flags[*]}"
    timed "$work/cpu/unsharded.txt" unsharded \
        "$bin" eval --model "$model" --data "$data" "${flags[@]}" --out "$work/ref" --quiet 2>"$work/ref.stderr" ||
        fail "the unsharded run failed"
    cpu_ref="$(cpu_of "$work/cpu/unsharded.txt")"
    log "unsharded: $(cat "$work/cpu/unsharded.txt")"
fi

# start-up cost, stated beside the ratio (every shard pays it once):
# - model load: an eval of a one-line text (one tiny window);
# - start-up of this run (load + tokenizing the whole corpus + planning): for a `--max-chunks K`
#   run, from a `--max-chunks 1` run, with cpu(k) = s + k*c.
probe_flags=() # the run's flags without rows output and with --max-chunks set to $1 (if present)
set_probe_flags() {
    probe_flags=()
    local i
    for ((i = 0; i < ${#flags[@]}; i++)); do
        case "${flags[$i]}" in
        --words) ;;
        --per-token) i=$((i + 1)) ;;
        --max-chunks)
            probe_flags+=(--max-chunks "$1")
            i=$((i + 1))
            ;;
        *) probe_flags+=("${flags[$i]}") ;;
        esac
    done
    probe_flags+=(--per-token none)
}
printf 'The quick brown fox jumps over the lazy dog.\n' >"$work/one-line.txt"
timed "$work/cpu/load.txt" load "$bin" eval --model "$model" --data "$work/one-line.txt" --threads 1 --per-token none --quiet \
    2>"$work/load.stderr" || fail "the model-load probe failed"
load_cpu="$(cpu_of "$work/cpu/load.txt")"
log "model load: ${load_cpu} s CPU (an eval of one line)"
startup=""
max_chunks=""
for ((i = 0; i < ${#flags[@]}; i++)); do
    [[ "${flags[$i]}" == --max-chunks ]] && max_chunks="${flags[$((i + 1))]}"
done
if [[ -n "$max_chunks" && -n "$cpu_ref" ]] && ((max_chunks > 1)); then
    set_probe_flags 1
    timed "$work/cpu/one-chunk.txt" one-chunk \
        "$bin" eval --model "$model" --data "$data" "${probe_flags[@]}" --quiet 2>"$work/one.stderr" ||
        fail "the --max-chunks 1 run failed"
    startup="$(python3 -c 'import sys; k = int(sys.argv[1]); one, full = map(float, sys.argv[2:]); c = (full - one) / (k - 1); print(f"{one - c:.3f} {c:.4f}")' \
        "$max_chunks" "$(cpu_of "$work/cpu/one-chunk.txt")" "$cpu_ref")"
    log "start-up of this run (model load + tokenizing the corpus + planning): ${startup% *} s CPU; then ${startup#* } s CPU per chunk"
fi

# ---- 3. the array and the merge job ----
# the tasks run the binary through a wrapper that appends each attempt's CPU time to cpu/task-I.txt,
# also for an attempt Slurm terminates (the TERM trap lets `time` report before the wrapper exits)
cat >"$work/timed-surprisal" <<EOF
#!/bin/bash
term=0
trap 'term=1' TERM
TIMEFORMAT="task=\${SLURM_ARRAY_TASK_ID:-x} attempt=\$((\${SLURM_RESTART_COUNT:-0} + 1)) user=%3U sys=%3S wall=%3R"
{ time "$bin" "\$@" 2>&3; } 3>&2 2>>"$work/cpu/task-\${SLURM_ARRAY_TASK_ID:-x}.txt" && rc=0 || rc=\$?
((term)) && exit 143
exit \$rc
EOF
chmod +x "$work/timed-surprisal"
out="$work/sharded"
windows_total="$(sed -n 's/^  "windows": \([0-9]*\),\{0,1\}$/\1/p' "$work/ref/summary.json")"
[[ -n "$windows_total" ]] || fail "no windows count in the reference summary.json"
sb() { timeout 30 sbatch --parsable "$@" | cut -d';' -f1; }
array="$(SURPRISAL_BIN="$work/timed-surprisal" SURPRISAL_LOG=info sb --array=0-$((shards - 1)) --output="$work/jobs/shard-%a.out" \
    "$root/scripts/cluster/shard.sbatch" "$shards" "$out" eval --model "$model" --data "$data" "${flags[@]}" "${shard_extra[@]}")" ||
    fail "sbatch of the array failed"
merge="$(SURPRISAL_BIN="$bin" sb --dependency="afterok:$array" --output="$work/jobs/merge.out" \
    "$root/scripts/cluster/merge.sbatch" "$out")" || fail "sbatch of the merge job failed"
log "submitted array job $array (tasks 0-$((shards - 1))) and merge job $merge (afterok:$array)"

job_field() { # job_field JOB KEY: a field of `scontrol show job`
    timeout 10 scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
shard_dir() { printf '%s/shard-%05d-of-%05d' "$out" "$1" "$shards"; }
ck_field() { # ck_field TASK KEY: a top-level field of the shard's checkpoint.json (pretty-printed)
    sed -n "s/^  \"$2\": \([^,]*\),\{0,1\}\$/\1/p" "$(shard_dir "$1")/checkpoint.json" 2>/dev/null
}
mid_run() { # a checkpoint with finished windows, no summary yet, and the task running
    local d w
    d="$(shard_dir "$1")"
    [[ -f "$d/checkpoint.json" && ! -f "$d/summary.json" ]] || return 1
    w="$(ck_field "$1" windows_done)"
    [[ -n "$w" && "$(ck_field "$1" complete)" == false ]] || return 1
    # window ids count from the corpus start: finished windows means past the shard's first one
    (("$w" > $(($1 * windows_total / shards)))) || return 1
    [[ "$(job_field "${array}_$1" JobState)" == RUNNING ]]
}
windows_done() { ck_field "$1" windows_done; }
task_is() { [[ "$(job_field "${array}_$1" JobState)" == "$2" ]]; } # task_is TASK STATE
release() { # release TASK...: a requeued task gets a begin time 120 s out; let it start sooner
    local t
    for t in "$@"; do
        wait_until "task $t to be pending after the requeue" task_is "$t" PENDING
    done
    # not at once: slurmd refuses a launch credential issued in the same second as the kill that
    # revoked the previous attempt's ("Job N already killed, do not launch batch job")
    sleep 2
    for t in "$@"; do
        timeout 10 scontrol update jobid="${array}_$t" StartTime=now || fail "cannot release task $t"
    done
}

# tasks 0 and 1 start together (the node has at least 2 CPUs, one per task); each is interrupted as
# soon as it has checkpointed finished windows (and has no summary yet)
requeue_task=""
hard_task=""
case "$kill_mode" in
both) requeue_task=0 hard_task=1 ;;
requeue) requeue_task=0 ;;
hard) hard_task=1 ;;
esac
targets=()
[[ -z "$requeue_task" ]] || targets+=("$requeue_task")
[[ -z "$hard_task" ]] || targets+=("$hard_task")
hard_kill() { # kill -9 of the task's surprisal process, found by its Slurm environment
    # (`scontrol listpids` needs a proctrack plugin that tracks pids; linuxproc does not answer it)
    local w p env_of pid=""
    w="$(windows_done "$hard_task")"
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == surprisal ]] || continue
        env_of="$(tr '\0' '\n' <"$p/environ" 2>/dev/null)" || continue
        grep -qx "SLURM_ARRAY_JOB_ID=$array" <<<"$env_of" && grep -qx "SLURM_ARRAY_TASK_ID=$hard_task" <<<"$env_of" &&
            pid="${p#/proc/}"
    done
    [[ -n "$pid" ]] || fail "no surprisal process with SLURM_ARRAY_JOB_ID=$array SLURM_ARRAY_TASK_ID=$hard_task"
    kill -9 "$pid"
    log "task $hard_task: kill -9 of surprisal (pid $pid, checkpoint at window $w)"
}
requeue_running() {
    local w
    w="$(windows_done "$requeue_task")"
    timeout 10 scontrol requeue "${array}_$requeue_task" || fail "scontrol requeue ${array}_$requeue_task failed"
    log "task $requeue_task: scontrol requeue while running (checkpoint at window $w)"
}
if ((${#targets[@]})); then
    ((cpus >= 2)) || fail "interrupting shards needs a node with 2 CPUs (DRILL_KILL=none runs without)"
    hard_done=0 requeue_done=0
    [[ -n "$hard_task" ]] || hard_done=1
    [[ -n "$requeue_task" ]] || requeue_done=1
    end=$((SECONDS + 90))
    while ((!hard_done || !requeue_done)); do
        ((SECONDS < end && SECONDS < deadline)) || fail "timed out waiting for tasks ${targets[*]} to be mid-run"
        if ((!hard_done)) && mid_run "$hard_task"; then
            hard_kill
            hard_done=1
        fi
        if ((!requeue_done)) && mid_run "$requeue_task"; then
            requeue_running
            requeue_done=1
        fi
        for t in "${targets[@]}"; do
            [[ ! -f "$(shard_dir "$t")/summary.json" ]] ||
                fail "task $t finished before it could be interrupted (make the shards longer: DRILL_ARGS)"
        done
        sleep 0.05
    done
fi
if [[ -n "$hard_task" ]]; then
    wait_until "task $hard_task to fail" task_is "$hard_task" FAILED
    log "task $hard_task: FAILED (ExitCode $(job_field "${array}_$hard_task" ExitCode)); merge job: $(job_field "$merge" Reason)"
    timeout 10 scontrol requeue "${array}_$hard_task" || fail "scontrol requeue of the failed task failed"
    deps="afterok$(for i in $(seq 0 $((shards - 1))); do printf ':%s_%s' "$array" "$i"; done)"
    timeout 10 scontrol update jobid="$merge" Dependency="$deps" || fail "cannot update the merge dependency"
    log "task $hard_task: requeued; merge job dependency now $deps"
fi
if ((${#targets[@]})); then
    release "${targets[@]}"
    log "released the requeued task(s) ${targets[*]} (scontrol update StartTime=now)"
fi

# ---- 4. wait for the merge, check the states ----
merge_done() {
    local s
    s="$(job_field "$merge" JobState)"
    case "$s" in
    COMPLETED) return 0 ;;
    FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
        fail "merge job $merge ended $s"
        ;;
    esac
    [[ "$(job_field "$merge" Reason)" != DependencyNeverSatisfied ]] ||
        fail "merge job $merge: DependencyNeverSatisfied"
    return 1
}
wait_until "the merge job" merge_done
log "merge job $merge completed"

problems=0
for i in $(seq 0 $((shards - 1))); do
    state="$(job_field "${array}_$i" JobState)"
    restarts="$(job_field "${array}_$i" Restarts)"
    want=0
    [[ "$i" == "$requeue_task" || "$i" == "$hard_task" ]] && want=1
    if [[ "$state" != COMPLETED || "$restarts" != "$want" ]]; then
        echo "MISMATCH task $i: $state with Restarts=$restarts (expected COMPLETED, Restarts=$want)" >&2
        problems=1
    fi
    if ((want)) && ! grep -q "resuming from checkpoint" "$work/jobs/shard-$i.out"; then
        echo "MISMATCH task $i: the retried attempt did not resume from its checkpoint" >&2
        problems=1
    fi
    attempts="$(grep -c '^task=' "$work/cpu/task-$i.txt" 2>/dev/null || true)"
    if ((attempts != want + 1)); then
        echo "MISMATCH task $i: $attempts timed attempts (expected $((want + 1)))" >&2
        problems=1
    fi
done
if [[ -n "$requeue_task$hard_task" ]]; then
    log "retried attempts:"
    for i in $requeue_task $hard_task; do
        grep -h "resuming from checkpoint" "$work/jobs/shard-$i.out" | sed "s/\x1b\[[0-9;]*m//g; s/^/  task $i: /" | tail -n 1
    done
fi

python3 "$root/scripts/drills/compare_runs.py" "$work/ref" "$out" --table || problems=1

# ---- 5. a scheduler retry of a finished task is a no-op ----
last=$((shards - 1))
dl="$(shard_dir "$last")"
before="$(cd "$dl" && find . -type f ! -name .surprisal.lock -exec sha256sum {} + | sort)"
timeout 10 scontrol requeue "${array}_$last" || fail "scontrol requeue of finished task $last failed"
release "$last"
wait_until "task $last to finish again" task_is "$last" COMPLETED
after="$(cd "$dl" && find . -type f ! -name .surprisal.lock -exec sha256sum {} + | sort)"
if [[ "$before" != "$after" ]]; then
    echo "MISMATCH the rerun of finished task $last changed $dl" >&2
    problems=1
fi
log "finished task $last requeued: reran in $(grep '^task=' "$work/cpu/task-$last.txt" | tail -n 1 | sed 's/.*wall=//') s wall, shard files unchanged: $([[ "$before" == "$after" ]] && echo yes || echo NO)"
python3 "$root/scripts/drills/compare_runs.py" "$work/ref" "$out" >/dev/null || problems=1

# ---- 6. CPU time ----
log "CPU time (user+sys) per attempt:"
grep -h '^task=' "$work"/cpu/task-*.txt | sed 's/^/  /'
total=0
for i in $(seq 0 $((shards - 1))); do
    # the no-op rerun of the last task is not part of the sharded run
    if ((i == last)); then
        t="$(grep '^task=' "$work/cpu/task-$i.txt" | head -n 1 | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "user" || kv[1] == "sys") s += kv[2] } } END { printf "%.3f", s }')"
    else
        t="$(cpu_of "$work/cpu/task-$i.txt")"
    fi
    total="$(python3 -c "print(f'{$total + $t:.3f}')")"
done
if [[ -n "$cpu_ref" ]]; then
    ratio="$(python3 -c "print(f'{$total / $cpu_ref:.3f}')")"
    log "shards total ${total} s CPU / unsharded ${cpu_ref} s CPU = ${ratio}$([[ -n "$requeue_task$hard_task" ]] && echo " (includes the interrupted attempts and their start-ups)")"
    log "  $shards shards carry $((shards - 1)) extra start-ups: model load ${load_cpu} s each$([[ -n "$startup" ]] && echo ", start-up of this run ${startup% *} s each")"
    log "  (shards total - $((shards - 1)) x model load) / unsharded = $(python3 -c "print(f'{($total - ($shards - 1) * $load_cpu) / $cpu_ref:.3f}')")"
    if [[ -n "$startup" ]]; then
        log "  (shards total - $((shards - 1)) x start-up) / unsharded = $(python3 -c "print(f'{($total - ($shards - 1) * ${startup% *}) / $cpu_ref:.3f}')")"
    fi
else
    log "shards total ${total} s CPU (no CPU time for the reused reference)"
fi

if ((problems)); then
    fail "the sharded run through Slurm does not match (see MISMATCH lines)"
fi
failed=0
log "OK: $shards shards through Slurm (array $array, merge $merge) == the unsharded run; $((SECONDS - t_start)) s in all"
