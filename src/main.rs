use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: every request allocates (JSON values, sled's node
/// copies), and glibc's malloc/free took about a quarter of the enqueue path's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's option enum (`mimalloc.h`; the -sys crate names it
/// only for mimalloc 2).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long mimalloc keeps freed pages before handing them back to the OS. Its default, 1 s,
/// let the pages a burst of batches had freed count in RSS for seconds after it, enough to
/// pass 256 MiB with a million queued; 250 ms keeps the fill's speed (docs/PERFORMANCE.md,
/// change 18).
const PURGE_DELAY_MS: std::ffi::c_long = 250;

/// Sets mimalloc's purge delay unless `MIMALLOC_PURGE_DELAY` in the environment chose one.
fn tune_allocator() {
    // SAFETY: mimalloc's option setters are not thread-safe; this runs first in `main`,
    // before any other thread exists, and the option index is checked by a test below.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

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
    /// Run the Cloud API simulator: a local stand-in for graph.facebook.com that keeps Meta's rules.
    Sim {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Simulator configuration (see sim.example.toml); defaults without it.
        #[arg(long, value_name = "PATH")]
        config: Option<std::path::PathBuf>,
    },
    /// A self-contained tour: the simulator and a daemon in a temporary directory, a realistic
    /// mixed load with progress and a summary, then everything cleaned up (under half a minute).
    Demo(waq::demo::DemoArgs),
    /// Print a shell completion script, e.g. `waq completions bash > /etc/bash_completion.d/waq`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `waq man | man -l -`.
    Man {
        /// A command's own page instead, e.g. `waq man send` or `waq man "sender resume"`.
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// Load run: start a daemon and a simulator, drive the daemon over its socket, print the
    /// performance figures against their targets (see docs/PERFORMANCE.md).
    Bench(waq::loadrun::BenchArgs),
}

fn main() {
    tune_allocator();
    // Usage errors exit 2 (clap's convention matches ours).
    let args = Args::try_parse().unwrap_or_else(|e| suggest_what_is_meant(e).exit());
    let code = match args.command {
        Command::Daemon(command) => waq::cli::run(command),
        Command::Sim { listen, config } => run_sim(listen, config),
        Command::Demo(args) => waq::demo::run(args),
        Command::Completions { shell } => waq::cli::completions(shell, Args::command()),
        Command::Man { command } => waq::cli::man(Args::command(), command.as_deref()),
        Command::Bench(args) => waq::loadrun::run(args),
    };
    std::process::exit(code)
}

/// Names that other queue tools give a command waq has under another name: clap would suggest
/// whatever is spelled alike (`watch` → `health`), not what is meant.
const MEANT_INSTEAD: [(&str, &str); 2] = [("watch", "stats --watch"), ("top", "stats --watch")];

fn suggest_what_is_meant(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::InvalidSubcommand {
        if let Some(ContextValue::String(name)) = e.get(ContextKind::InvalidSubcommand) {
            if let Some((_, meant)) = MEANT_INSTEAD.iter().find(|(n, _)| n == name) {
                e.insert(
                    ContextKind::SuggestedSubcommand,
                    ContextValue::Strings(vec![meant.to_string()]),
                );
            }
        }
    }
    e
}

fn run_sim(listen: std::net::SocketAddr, config: Option<std::path::PathBuf>) -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a redirected log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    // A configuration error is a usage error (2), as for `waq serve`; what fails later is 1.
    let config = match waq::sim::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            waq::stderr_line!("waq sim: {e:#}");
            return waq::cli::EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            waq::stderr_line!("waq sim: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(waq::sim::run(listen, config)) {
        Ok(()) => 0,
        Err(e) => {
            waq::stderr_line!("waq sim: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index 15 is the purge delay: mimalloc 3's default for it, 1,000 ms, is there before
    /// and `PURGE_DELAY_MS` after.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reading an option is a plain load.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        tune_allocator();
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000);
        assert_eq!(after, PURGE_DELAY_MS);
    }
}
