// `sqlx::migrate!` embeds `migrations/` at compile time; without this, cargo would not notice
// a new migration file and keep the old set (the fix sqlx's own `sqlx migrate build-script`
// writes).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
