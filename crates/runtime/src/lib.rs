//! The container: namespaces, mounts, pivot_root, identity, cgroups, GPU injection.
//!
//! Owns every namespace, mount and cgroup system call berth makes. Must not know about image
//! formats, the store, or batch jobs: it is handed a root filesystem (a squashfs file or a
//! directory) and what the image and the user asked for, resolves that into a
//! [`ContainerSpec`] ([`plan`]), and runs it ([`run`]).
//!
//! [`run`] clones the calling process, so it must be called from a single-threaded
//! process: the `berth` CLI, or the small runtime process the daemons fork and exec (never
//! the daemons themselves; see DESIGN.md).

pub mod cgroup;
mod container;
pub mod enter;
mod error;
pub mod gpu;
mod identity;
mod in_use;
mod launch;
pub mod plan;
pub mod shared;
mod spec;
mod sys;
pub mod tmpfs;

pub use error::RuntimeError;
pub use identity::Identity;
pub use in_use::users_of;
pub use launch::{
    catch_limit_updates, follow_limit_file, forwarded_set, limit_signal, run, run_then,
    signal_processes, Outcome, BERTH_IN_CONTAINER, BERTH_LOADERS, CGROUP_PARENT, FORWARDED,
};
pub use plan::{plan, Action, ImageDefaults, Options, DEFAULT_PATH, NOT_FROM_HOST};
pub use spec::{Bind, ContainerSpec, Program, Rootfs, TimeLimit, WarnTo, Warning};
