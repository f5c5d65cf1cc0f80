#!/bin/sh
# The in-place proof, run inside a lab VM by `crlab-lab in-place-proof` (the guest is an
# SELinux-enforcing Debian host): the copied suite runs the catalog in place, four times,
# and the policy store's module list is recorded before and after each run.
#   1. the whole catalog (FILTER1, empty: all of it);
#   2. FILTER2 with the trial FAIL made to fail on purpose (CRLAB_FAIL_ON_PURPOSE);
#   3. FILTER2 again, interrupted with SIGINT once a scenario module is recorded;
#   4. FILTER2 again, killed with SIGKILL at the same point, then a run that selects no
#      trial, which finds the state file and removes what it names.
# Usage: in-place-proof.sh PROOF_DIR OUT_DIR FILTER2 FAIL
set -u
proof=$1 out=$2 filter2=$3 fail=$4
mkdir -p "$out"
export CRLAB_IN_PLACE=1 CRLAB_VM=0 CRLAB_PAYLOAD_DIR="$proof/bin" CRLAB_ROOT="$proof/tree"
suite="$proof/bin/scenarios"
state=/var/lib/crlab/in-place-modules

modules() { semodule --list-modules=full | sort > "$out/$1"; }

# Waits until the state file names a scenario module (a trial is loading or has loaded it),
# then a little longer: the run is then in the middle of its trials. Gives up when the run
# PID has ended.
wait_for_module() {
    while kill -0 "$3" 2>/dev/null; do
        if grep -q "^module $1" "$state" 2>/dev/null; then
            sleep "$2"
            return 0
        fi
        sleep 1
    done
    return 1
}

modules before-1
CRLAB_REPORT_DIR="$out/run-1" "$suite" --test-threads 1 > "$out/run-1.log" 2>&1
echo $? > "$out/run-1.rc"
modules after-1

modules before-2
CRLAB_REPORT_DIR="$out/run-2" CRLAB_FAIL_ON_PURPOSE="$fail" "$suite" "$filter2" \
    > "$out/run-2.log" 2>&1
echo $? > "$out/run-2.rc"
modules after-2

modules before-3
CRLAB_REPORT_DIR="$out/run-3" "$suite" "$filter2" > "$out/run-3.log" 2>&1 &
pid=$!
wait_for_module restore-unconfined-service 5 "$pid" && kill -INT "$pid"
wait "$pid"
echo $? > "$out/run-3.rc"
modules after-3

modules before-4
CRLAB_REPORT_DIR="$out/run-4" "$suite" "$filter2" > "$out/run-4.log" 2>&1 &
pid=$!
wait_for_module restore-unconfined-service 5 "$pid" && kill -KILL "$pid"
wait "$pid"
echo $? > "$out/run-4.rc"
cp "$state" "$out/run-4.state" 2>/dev/null
modules killed-4
CRLAB_REPORT_DIR="$out/run-4b" "$suite" no-trial-has-this-name > "$out/run-4b.log" 2>&1
echo $? > "$out/run-4b.rc"
modules after-4
ls /opt /tmp /var/lib/crlab > "$out/leftovers.txt" 2>&1
exit 0
