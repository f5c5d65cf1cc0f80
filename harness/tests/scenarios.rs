//! The SELinux conformance suite's test target: `crlab_harness::suite` does the work
//! (`cargo xtask vm-test` runs it in the VM lab; plain `cargo test` lists its trials as
//! ignored).

fn main() -> std::process::ExitCode {
    crlab_harness::suite::main(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}
