//! The plugin's PHP on its own: every file parses, and the PHPUnit tests of `shim/tests/unit`
//! (pure logic, the language packs, the outbox on a real database) pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use mih_testkit::TestDatabase;

use super::driver::shim_dir;

fn php_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            php_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "php") {
            into.push(path);
        }
    }
}

#[test]
fn every_php_file_parses() {
    let mut files = Vec::new();
    php_files(&shim_dir(), &mut files);
    assert!(files.len() > 30, "found only {} PHP files", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let output = Command::new("php")
                .arg("-l")
                .arg(file)
                .output()
                .expect("php runs (scripts/dev-deps installs it)");
            (!output.status.success()).then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_phpunit_tests_pass() {
    let db = TestDatabase::create().await.expect("database");
    let output = Command::new("phpunit")
        .arg("--configuration")
        .arg(shim_dir().join("tests/phpunit.xml"))
        .env(
            "MIH_STANDIN_DSN",
            format!(
                "pgsql:host=127.0.0.1;port=5432;dbname={};user=postgres",
                db.name()
            ),
        )
        .output()
        .expect("phpunit runs (scripts/dev-deps installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("No tests executed"), "{stdout}");
}
