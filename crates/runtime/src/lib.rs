//! The container: namespaces, mounts, pivot_root, identity, cgroups, GPU injection.
//!
//! Owns every namespace, mount and cgroup system call berth makes. Must not know about image
//! formats, the store, or batch jobs: it is handed a root filesystem (a squashfs file or a
//! directory) and a fully resolved [`ContainerSpec`], and runs it.

pub mod cgroup;
pub mod gpu;
