//! The dashboard served by api: sessions, CSRF, security headers and languages over plain
//! HTTP (`pages.rs`), and what an administrator sees in a real browser (`browser.rs`).

mod browser;
mod pages;
