//! `glichen`: with no subcommand it opens the studio (the egui window, `glichen::ui`); with one it
//! runs the headless CLI. Both are thin shells over the `glichen` library.

mod cli;

use clap::Parser;

/// glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mapping
/// and unmaps it on free, so each of a step's large activations (a 512² VAE feature map is
/// 128 MiB) is page-faulted and zeroed by the kernel again on every call: about a tenth of a VAE
/// decode. Serving them from the heap and keeping freed memory lets the next step reuse it; the
/// process keeps its high-water mark, and the peak barely moves (5.80 → 5.91 GiB for a 512² VAE
/// decode).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ONE_GIB: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_GIB);
            libc::mallopt(libc::M_TRIM_THRESHOLD, ONE_GIB);
            // Other threads' arenas grow in 64 MiB heaps and fall back to mmap beyond that;
            // the studio's worker thread allocates the activations, so it shares the main arena.
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// The error and its causes, each said once: library errors already write their source into their
/// own message ("file: reason"), so a cause whose text is already in the line is not repeated.
fn error_message(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a log file or a pipe they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
