//! Inbound webhooks: external services sending messages back towards a Moodle site.

mod directory;
mod route;

pub(crate) use directory::InboundDirectory;
pub(crate) use route::post_inbound;
