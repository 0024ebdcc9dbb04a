//! dlq: keeps dead letters and replays them (coming with the dead-letter issue). Today it provisions the streams and buckets it will use and reports ready.

use mih_shared::{RunError, ServiceContext, Shutdown, ops};

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    ops::run_provision_only(ctx, shutdown).await
}
