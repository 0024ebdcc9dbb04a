use std::process::ExitCode;

use clap::Parser;

// glibc's malloc was a third of the matcher's CPU under load (contended arenas, see
// BENCHMARKS.md); mimalloc's thread-local heaps avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = mih::cli::Cli::parse();
    match mih::commands::execute(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mih: {error:#}");
            ExitCode::FAILURE
        }
    }
}
