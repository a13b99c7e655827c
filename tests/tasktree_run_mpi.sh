#!/bin/bash
# End-to-end tests of `tasktree-run --mpi` under a real mpiexec, with real processes. One scenario
# per ctest entry. Usage: tasktree_run_mpi.sh SCENARIO RANKS TASKTREE_RUN MPIEXEC [MPIEXEC FLAGS...]
#
#   once     every job runs exactly once, after its parent (a job fails if its parent's marker is
#            missing); a failing attempt is retried; output lines reach rank 0's console, prefixed
#            [host:path]; the report names the host of every job
#   refuse   several ranks without --mpi: every rank refuses, nothing runs
#   invalid  --mpi with a bad jobs file: one message naming FILE:LINE, exit code 2, nothing runs
#   kill     (launcher flags that survive a dead rank) the rank running a job is killed with
#            SIGKILL: its job runs again on another rank, and the run finishes with every job done
#   place    --place-by-first-component on three ranks named head, alpha and beta
#            (TASKTREE_MPI_HOST_NAME): each job runs on its host; a plan naming a host without a
#            rank is refused before anything runs
#   sigterm  SIGTERM to mpiexec: the run stops gracefully, with its summary and report, and no job
#            process is left
set -u
scenario=$1 ranks=$2 tool=$3
shift 3
work=$(mktemp -d "${TMPDIR:-/tmp}/tasktree-run-mpi.XXXXXX")
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work
failed=0
fail() {
  echo "FAILED: $*"
  failed=1
}
show() {
  echo "--- standard output"
  cat "$work/out"
  echo "--- standard error"
  cat "$work/err"
  echo "---"
}
# How many lines of FILE are exactly LINE.
count() { grep -cxF -- "$2" "$1"; }

# A tree of 3 x 4 x 3 jobs with a barrier: each job checks that its parent finished, records its
# start, prints a line on each stream, and leaves its own marker.
plan() {
  local record="echo \$TASKTREE_JOB >> $work/starts; echo out-\$TASKTREE_JOB; echo err-\$TASKTREE_JOB >&2;"
  record+=" mkdir -p $work/done/\$TASKTREE_JOB"
  local job="test -e $work/done/\$(dirname \$TASKTREE_JOB) || test \$(dirname \$TASKTREE_JOB) = . || exit 9; $record"
  mkdir -p "$work/done"
  for a in h1 h2 h3; do
    echo "$a $job"
    for b in 1 2 3 4; do
      echo "$a/$b $job"
      for c in x y z; do echo "$a/$b/$c $job"; done
    done
    # The barrier job: after the whole subtree of $a, whose 4 children have markers by then.
    echo "$a/~/after test \$(ls $work/done/$a | wc -l) = 4 || exit 9; $record"
  done
}

case $scenario in
  once)
    plan > "$work/plan.jobs"
    # flaky fails its first attempt: --retries 1 runs it again.
    echo "flaky test -e $work/flaky || { touch $work/flaky; exit 1; }; echo \$TASKTREE_JOB >> $work/starts" >> "$work/plan.jobs"
    jobs=$(grep -c . "$work/plan.jobs")
    "$@" -n "$ranks" "$tool" --mpi --tag-host -j 4 --queue-ahead 2 --retries 1 --retry-backoff 0 --json "$work/report.json" \
      --journal "$work/run.journal" "$work/plan.jobs" > "$work/out" 2> "$work/err"
    status=$?
    show
    [ "$status" = 0 ] || fail "exit status $status, not 0"
    host=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["host"])' "$work/report.json")
    [ -n "$host" ] || fail "the report names no host"
    while read -r path _; do
      [ "$(count "$work/starts" "$path")" = 1 ] ||
        fail "$path started $(count "$work/starts" "$path") times"
      [ "$path" = flaky ] && continue
      [ "$(count "$work/out" "[$host:$path] out-$path")" = 1 ] || fail "no single line [$host:$path] out-$path on standard output"
      [ "$(count "$work/err" "[$host:$path] err-$path")" = 1 ] || fail "no single line [$host:$path] err-$path on standard error"
    done < "$work/plan.jobs"
    python3 - "$work/report.json" "$jobs" << 'PY' || fail "the report"
import json, sys
report = json.load(open(sys.argv[1]))
jobs = int(sys.argv[2])
assert report["counts"]["succeeded"] == jobs, report["counts"]
assert report["counts"]["retries"] == 1, report["counts"]
assert report["settings"]["mpi"] is True
assert all(job.get("host") for job in report["jobs"]), "a job without a host"
flaky = [job for job in report["jobs"] if job["path"] == "flaky"][0]
assert flaky["attempts"] == 2, flaky
PY
    grep -q "failed flaky: exit code 1 (attempt 1 of 2, .* on $host); retrying" "$work/err" || fail "no retry line for flaky"
    grep -q "^tasktree-run: $jobs jobs in .*: $jobs succeeded, 0 failed" "$work/err" || fail "no summary line"
    # Rank 0's journal names the host of every job; a resumed run runs nothing again.
    [ "$(grep -c "\"host\":\"$host\"" "$work/run.journal")" = "$jobs" ] || fail "not every journal record names the host"
    cp "$work/starts" "$work/starts.before"
    "$@" -n "$ranks" "$tool" --mpi --journal "$work/run.journal" --resume "$work/plan.jobs" > "$work/out" 2> "$work/err"
    status=$?
    show
    [ "$status" = 0 ] || fail "resumed run: exit status $status, not 0"
    cmp -s "$work/starts" "$work/starts.before" || fail "the resumed run ran jobs again"
    grep -q "^tasktree-run: $jobs jobs in .*; $jobs resumed (succeeded before)" "$work/err" ||
      fail "the summary does not count $jobs resumed jobs"
    ;;
  refuse)
    echo "once touch $work/ran" > "$work/plan.jobs"
    "$@" -n "$ranks" "$tool" "$work/plan.jobs" > "$work/out" 2> "$work/err"
    status=$?
    show
    [ "$status" = 2 ] || fail "exit status $status, not 2"
    [ "$(grep -c "tasktree-run: error: started as one of $ranks processes .*run with --mpi" "$work/err")" = "$ranks" ] ||
      fail "not every rank said why it refused"
    [ -e "$work/ran" ] && fail "a job ran"
    ;;
  invalid)
    printf 'good touch %s/ran\nbad/ touch %s/ran\n' "$work" "$work" > "$work/plan.jobs"
    "$@" -n "$ranks" "$tool" --mpi "$work/plan.jobs" > "$work/out" 2> "$work/err"
    status=$?
    show
    [ "$status" = 2 ] || fail "exit status $status, not 2"
    [ "$(grep -c "^tasktree-run: $work/plan.jobs:2: " "$work/err")" = 1 ] || fail "not one message naming plan.jobs:2"
    [ -e "$work/ran" ] && fail "a job ran"
    ;;
  kill)
    plan > "$work/plan.jobs"
    # victim's first attempt kills the rank that runs it (its shell's parent); the job runs again on
    # another rank. Rank 0 runs no jobs here (three ranks on one host), so the run survives.
    echo "victim echo \$TASKTREE_JOB >> $work/starts; test -e $work/killed || { touch $work/killed; kill -KILL \$PPID; sleep 30; }" \
      >> "$work/plan.jobs"
    jobs=$(grep -c . "$work/plan.jobs")
    "$@" -n "$ranks" "$tool" --mpi -j 4 --heartbeat-timeout 3 --json "$work/report.json" "$work/plan.jobs" \
      > "$work/out" 2> "$work/err"
    status=$?
    show
    echo "mpiexec exited with status $status (Open MPI's is 0 under --enable-recovery, whatever the ranks return)"
    [ -e "$work/killed" ] || fail "the victim never ran"
    [ "$(count "$work/starts" victim)" = 2 ] || fail "victim started $(count "$work/starts" victim) times, not twice"
    while read -r path _; do
      [ "$path" = victim ] && continue
      # A job in flight on the lost rank runs again (at least once); the others exactly once.
      [ "$(count "$work/starts" "$path")" -ge 1 ] || fail "$path never ran"
    done < "$work/plan.jobs"
    grep -q "worker rank [0-9]* on host .* lost" "$work/err" || fail "no line says which rank was lost"
    grep -q "^tasktree-run: $jobs jobs in .*: $jobs succeeded, 0 failed" "$work/err" || fail "not every job succeeded"
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["exit_code"] == 0, r["counts"]' \
      "$work/report.json" || fail "the report"
    ;;
  place)
    # Three ranks with host names of their own (MPMD: one context per rank).
    ranks_named() {
      local args=("$@") first=1
      for host in head alpha beta; do
        [ $first = 1 ] || launch+=(:)
        first=0
        launch+=(-n 1 env TASKTREE_MPI_HOST_NAME=$host "$tool" "${args[@]}")
      done
    }
    record="echo \$TASKTREE_JOB \$TASKTREE_MPI_HOST_NAME >> $work/starts"
    for job in alpha alpha/1 alpha/2 alpha/3 beta beta/1 beta/2; do echo "$job $record"; done > "$work/plan.jobs"
    launch=("$@")
    ranks_named --mpi -j 4 --place-by-first-component "$work/plan.jobs"
    "${launch[@]}" > "$work/out" 2> "$work/err"
    status=$?
    show
    [ "$status" = 0 ] || fail "exit status $status, not 0"
    for job in alpha alpha/1 alpha/2 alpha/3 beta beta/1 beta/2; do
      [ "$(count "$work/starts" "$job ${job%%/*}")" = 1 ] || fail "$job did not run once on host ${job%%/*}"
    done
    # A job placed on a host where no rank runs: refused on every rank, nothing runs.
    rm -f "$work/starts"
    echo "gamma/x $record" >> "$work/plan.jobs"
    launch=("$@")
    ranks_named --mpi --place-by-first-component "$work/plan.jobs"
    "${launch[@]}" > "$work/out" 2> "$work/err"
    status=$?
    show
    [ "$status" != 0 ] || fail "exit status 0 for a placement on a host without a rank"
    grep -q "gamma" "$work/err" || fail "the error does not name the host gamma"
    [ -e "$work/starts" ] && fail "a job ran"
    ;;
  sigterm)
    # Each job writes its process ID, which `exec` hands on to the sleep, so that the check below
    # looks at these processes only (a `sleep 300` of anything else on the machine is not ours).
    for i in 1 2 3 4 5 6; do echo "slow$i echo \$\$ > $work/pid$i; touch $work/started$i; exec sleep 300"; done \
      > "$work/plan.jobs"
    echo "slow1/child touch $work/child" >> "$work/plan.jobs"
    # Open MPI passes SIGTERM on to the ranks after odls_base_sigkill_timeout seconds and SIGKILLs
    # them as long again: 3 s leaves the ranks time to stop their jobs and report.
    "$@" -n "$ranks" --mca odls_base_sigkill_timeout 3 "$tool" --mpi -j 4 --kill-after 1 \
      --json "$work/report.json" "$work/plan.jobs" > "$work/out" 2> "$work/err" &
    launcher=$!
    for _ in $(seq 1 600); do
      [ "$(ls "$work" | grep -c '^started')" -ge 3 ] && break
      sleep 0.1
    done
    kill -TERM "$launcher"
    wait "$launcher"
    status=$?
    show
    echo "mpiexec exited with status $status"
    grep -q "^tasktree-run: .* jobs in .*stopped" "$work/err" || fail "no summary from rank 0"
    [ -e "$work/child" ] && fail "a job started after the stop"
    python3 - "$work/report.json" << 'PY' || fail "the report"
import json, sys
report = json.load(open(sys.argv[1]))
assert report["result"] == "interrupted", report["result"]
assert report["counts"]["stopped"] >= 3, report["counts"]
PY
    sleep 1
    for pid_file in "$work"/pid*; do
      [ -e "$pid_file" ] || continue
      pid=$(cat "$pid_file")
      if [ -n "$pid" ] && grep -qs "sleep" "/proc/$pid/cmdline"; then
        ps -o pid,ppid,stat,args -p "$pid"
        fail "job process $pid ($(basename "$pid_file")) outlived the run"
        kill -KILL "$pid"
      fi
    done
    ;;
  *)
    echo "unknown scenario $scenario"
    exit 2
    ;;
esac
[ $failed = 0 ] && echo "tasktree-run --mpi test ($scenario): passed"
exit $failed
