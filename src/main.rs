fn main() {
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
