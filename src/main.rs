use clap::{Parser, Subcommand};

/// waq: a durable outbound message queue for the WhatsApp Cloud API.
#[derive(Parser)]
#[command(name = "waq", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Daemon(waq::cli::Command),
    // ---- `waq sim` and `waq demo` are added here, e.g. `Sim(waq::sim::SimArgs)`, each
    // ---- dispatched in `main` below next to `Command::Daemon`.
}

fn main() {
    // Usage errors exit 2 (clap's convention matches ours).
    let args = Args::parse();
    let code = match args.command {
        Command::Daemon(command) => waq::cli::run(command),
    };
    std::process::exit(code)
}
