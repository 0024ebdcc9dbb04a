//! The SSRF guard ([`mih_shared::ssrf`]) as reqwest's resolver, so HTTP and SOAP connections
//! only reach allowed addresses.

use std::sync::Arc;

pub use mih_shared::ssrf::{SsrfError, SsrfGuard};

#[derive(Debug, Clone)]
pub struct GuardedResolver(pub Arc<SsrfGuard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.0);
        Box::pin(async move {
            let addrs = guard.resolve(name.as_str(), 0).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}
