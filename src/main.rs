use clap::Parser;

fn main() {
    let cli = kplug::cli::Cli::parse();
    let code = match kplug::cli::run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:#}");
            kplug::error::kind_of(&e).exit_code()
        }
    };
    std::process::exit(code);
}
