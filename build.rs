//! Compiles Tessera's own gRPC API (`proto/`) with a vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/tessera/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[proto], &["proto"])?;
    Ok(())
}
