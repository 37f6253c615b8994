//! Generates the gRPC client and server for the original `proto/logs.proto`.
//! `PROTOC` selects the compiler (the Nix build sets it); otherwise `protoc` on PATH.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = proto_dir.join("logs.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    tonic_prost_build::configure().compile_protos(&[proto], &[proto_dir])?;
    Ok(())
}
