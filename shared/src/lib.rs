//! mih's shared crate: the contracts between services (messages, names, topology) and the
//! plumbing every service uses (config, telemetry, errors, readiness, shutdown).

pub mod circuit;
pub mod config;
pub mod connect;
pub mod consumer;
pub mod context;
pub mod crypto;
pub mod db;
pub mod error;
pub mod live;
pub mod messages;
pub mod metrics;
pub mod moodle;
pub mod names;
pub mod ops;
pub mod parking;
pub mod partition;
pub mod pgtext;
pub mod readiness;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod signature;
pub mod sources;
pub mod ssrf;
pub mod telemetry;
pub mod topology;
pub mod urlpath;

pub use context::{BoxError, RunError, ServiceContext};
pub use service::ServiceName;
pub use shutdown::Shutdown;
