//! Compiles the image schema (`proto/crlab_image.proto`) with protox (no
//! `protoc` needed) into prost types plus pbjson serde impls for `crlab show`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/crlab_image.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile([proto], ["proto"])?;
    let descriptor_path = out.join("crlab_image.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_protos(&[proto], &["proto"])?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .build(&[".crlab.image.v1"])?;
    Ok(())
}
