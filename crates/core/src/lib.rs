//! berth's domain types, with no I/O.
//!
//! Owns: the administrator's configuration (what it means, not where it is read from), the
//! resource quantities users type (`4G`, `1.5` CPUs) and the validation of both.
//! Must not: read files, touch the network, make system calls. Callers read the bytes and hand
//! them over; everything here is a pure function and is unit-tested as such.

pub mod config;
pub mod quantity;

pub use config::{BindPolicy, Config, ConfigError, RegistryConfig};
pub use quantity::{parse_cpus, parse_size, QuantityError};
