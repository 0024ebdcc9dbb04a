//! dispatcher: delivers jobs over REST, AMQP and SOAP (coming with the dispatcher issue). Today it provisions the streams and buckets it will use and reports ready.

use mih_shared::{RunError, ServiceContext, Shutdown, ops};

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    ops::run_provision_only(ctx, shutdown).await
}
