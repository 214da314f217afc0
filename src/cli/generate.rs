//! `waq completions SHELL` (clap_complete) and `waq man [COMMAND]` (clap_mangen): generated
//! from the same definitions that parse the command line, so they never drift from it.

use std::io::Write;

use clap_complete::Shell;

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: Shell, mut cmd: clap::Command) -> i32 {
    let name = cmd.get_name().to_string();
    let mut out = std::io::stdout();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    match out.flush() {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("waq: cannot write the completion script: {e}");
            1
        }
    }
}

/// Prints the man page (roff) of `waq`, or of one subcommand as `waq-COMMAND(1)`, to stdout.
pub fn man(cmd: clap::Command, command: Option<&str>) -> i32 {
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
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
                        "waq: no command `{part}` in `{name}`; commands: {}",
                        known.join(", ")
                    );
                    return super::EXIT_USAGE;
                };
                name = format!("{name}-{}", sub.get_name());
                invocation = format!("{invocation} {}", sub.get_name());
                current = sub;
            }
            // Page `waq-send(1)`, synopsis `waq send [OPTIONS] ...`.
            current
                .display_name(name)
                .bin_name(invocation)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut out = std::io::stdout();
    let rendered = clap_mangen::Man::new(page)
        .render(&mut out)
        .and_then(|()| out.flush());
    match rendered {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("waq: cannot write the man page: {e}");
            1
        }
    }
}
