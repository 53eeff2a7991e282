//! berth's image store: importing Docker/OCI images and root filesystems into one flattened,
//! content-addressed squashfs file per image.
//!
//! Owns: archive formats (docker-archive, OCI layout and archive, plain rootfs tar or
//! directory), safe layer flattening (whiteouts, hardlinks, path sanitising), the squashfs
//! build, the on-disk store with its names, and the unpacked-directory cache that
//! unprivileged containers run from.
//! Must not: create namespaces, mount anything or run containers (that is `berth-runtime`),
//! and must never write a file outside the store: layers are flattened as tar streams in
//! memory, never extracted onto the host filesystem.

mod archive;
mod compress;
mod digest;
mod error;
mod flatten;
mod reference;
mod registry;
mod sif;
mod squash;
mod store;
mod tls;

pub use archive::{host_arch, tar_directory};
pub use digest::{is_sha256_hex, Digest};
pub use error::ImageError;
pub use flatten::{FlattenStats, Layer};
pub use reference::{component_of, Reference};
pub use registry::{credentials_from, login, remove_credentials, PullReference, RegistryOptions};
pub use squash::{build as build_squashfs, Owner, MOUNT_POINTS};
pub use store::{ImageConfig, ImageRecord, ImportOptions, Store};
pub use tls::client_config_with as tls_client_config;
