//! The generated types, client and server of `proto/tessera/admin/v1/admin.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("tessera.admin.v1");
