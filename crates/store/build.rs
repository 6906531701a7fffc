//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the
//! files of `migrations/` at compile time, and Cargo does not watch that
//! folder by itself (a new file would otherwise be missing until an
//! unrelated change triggers a rebuild).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
