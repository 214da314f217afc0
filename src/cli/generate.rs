//! `waq completions SHELL` (clap_complete) and `waq man [COMMAND]` (clap_mangen): generated
//! from the same definitions that parse the command line, so they never drift from it.

use std::io::Write;

use clap_complete::Shell;

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: Shell, mut cmd: clap::Command) -> i32 {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    emit(&script, "the completion script")
}

/// Prints the man page (roff) of `waq`, or of one subcommand as `waq-COMMAND(1)`, to stdout.
pub fn man(cmd: clap::Command, command: Option<&str>) -> i32 {
    let page = match command {
        None => cmd,
        Some(path) => {
            let mut current = cmd;
            let mut name = current.get_name().to_string();
            let mut invocation = name.clone();
            for part in path.split_whitespace() {
                let Some(sub) = current.find_subcommand(part).cloned() else {
                    let known: Vec<&str> =
                        current.get_subcommands().map(|s| s.get_name()).collect();
                    eprintln!(
                        "waq: no command `{part}` in `{invocation}`; commands: {}",
                        known.join(", ")
                    );
                    return super::EXIT_USAGE;
                };
                name = format!("{name}-{}", sub.get_name());
                invocation = format!("{invocation} {}", sub.get_name());
                current = sub;
            }
            // Page `waq-send(1)`, synopsis `waq send [OPTIONS] ...`.
            current.display_name(name).bin_name(invocation)
        }
    };
    let mut roff = Vec::new();
    let rendered = clap_mangen::Man::new(page)
        .source(format!("waq {}", env!("CARGO_PKG_VERSION")))
        .render(&mut roff);
    if let Err(e) = rendered {
        eprintln!("waq: cannot render the man page: {e}");
        return 1;
    }
    emit(&roff, "the man page")
}

/// Writes `bytes` to stdout. A reader that stops early (`| head`) is not an error.
fn emit(bytes: &[u8], what: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => super::EXIT_OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => super::EXIT_OK,
        Err(e) => {
            eprintln!("waq: cannot write {what}: {e}");
            1
        }
    }
}
