//! The smallest workload: no state of its own beyond what every workload checks (pid, tid,
//! descriptor table, signal state). Deterministic, for image snapshots and process-level tests.

use crlab_workloads::runtime::Workload;

fn main() {
    let mut w = Workload::from_args("idle");
    let checks = w.wait();
    w.finish(checks)
}
