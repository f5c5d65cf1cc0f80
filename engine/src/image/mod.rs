//! Image files: the protobuf schema, the on-disk framing and the dump directory.

/// The generated prost types of `proto/crlab_image.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod schema {
    include!(concat!(env!("OUT_DIR"), "/crlab.image.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/crlab.image.v1.serde.rs"));
}
