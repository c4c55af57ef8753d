fn main() {
    keep_freed_memory();
    let cli = kplug::cli::parse();
    let code = match kplug::cli::run(cli) {
        Ok(()) => 0,
        Err(e) => {
            // Escaped: an error may quote untrusted bytes (an archive entry, a registry's
            // message); the terminal must not interpret them.
            eprintln!(
                "Error: {}",
                kplug::progress::escape_lines(&format!("{e:#}"))
            );
            kplug::error::kind_of(&e).exit_code()
        }
    };
    std::process::exit(code);
}

/// Downloads pass the HTTP client's receive buffers (~400 KiB each) to the file writer
/// thread, which frees them after writing. By default glibc gives such memory back to
/// the kernel at once and faults it in again for the next buffer (60,000 page faults a
/// GiB); with fixed thresholds it is reused. What it keeps is bounded by the queues.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
