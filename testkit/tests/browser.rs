//! The browser harness cleans up after itself even when a test never closes its session.

use std::time::Duration;

use mih_testkit::browser::Browser;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_dropped_without_closing_leaves_no_chromium_behind() {
    let browser = Browser::start().await.expect("a browser");
    let profile = browser
        .execute("return 1;", Vec::new())
        .await
        .map(|_| browser.profile_dir())
        .expect("the session answers");
    assert!(
        processes_mentioning(&profile) > 0,
        "Chromium runs with the session's profile {profile}"
    );
    drop(browser);
    mih_testkit::eventually(Duration::from_secs(10), || async {
        match processes_mentioning(&profile) {
            0 => Ok(()),
            n => Err(format!("{n} Chromium processes still use {profile}")),
        }
    })
    .await
    .expect("every Chromium of the session is gone");
}
