use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("not true after {waited:?}; last observation: {last}")]
pub struct Timeout {
    pub waited: Duration,
    pub last: String,
}

/// Polls `probe` until it returns `Ok`, for at most `timeout`. The error carries the probe's
/// last complaint, so a failing test says what it was waiting for.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(last) => {
                if started.elapsed() >= timeout {
                    return Err(Timeout {
                        waited: started.elapsed(),
                        last,
                    });
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Polls `url` with GET until it answers 200 (a `/readyz`, typically).
pub async fn wait_until_ok(url: &str, timeout: Duration) -> Result<(), Timeout> {
    let http = reqwest::Client::new();
    eventually(timeout, || {
        let request = http.get(url).send();
        async move {
            let response = request.await.map_err(|e| e.to_string())?;
            if response.status() == reqwest::StatusCode::OK {
                Ok(())
            } else {
                Err(format!(
                    "{}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ))
            }
        }
    })
    .await
}
