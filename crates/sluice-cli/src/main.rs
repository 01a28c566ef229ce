//! The `sluice` command; see `sluice --help`.

/// The binary's allocator. A proxy call makes about a hundred small allocations across
/// hyper, reqwest, axum and Sluice; glibc's allocator spent about a fifth of `serve`'s CPU
/// on them (perf, `cargo xtask bench-serve`), mimalloc's thread-local free lists much less.
/// Only the binary chooses: the library crates leave the allocator to their users.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_cli::main_entry()
}
