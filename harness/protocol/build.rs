//! Compiles the guest channel protocol (`proto/agent.proto`) with protox (no
//! `protoc` needed) into prost types for `crate::messages`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile([proto], ["proto"])?;
    let descriptor_path = out.join("crlab_agent.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
