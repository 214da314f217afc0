//! `waq demo`: a self-contained tour. Starts the Cloud API simulator in-process and a daemon in
//! a temporary directory, tells the story of a realistic mixed load in five chapters, prints a
//! summary from the daemon's store and the simulator's counts, and cleans up.
//!
//! Map: `stage` sets up and tears down (`workdir`, `simulator`, `daemon`); `waq` is the socket
//! client; the chapters are `first_contact`, `replies`, `burst`, `not_on_whatsapp`, `outage`;
//! `summary` closes; `ui` draws (progress bars on a terminal, plain lines otherwise); `people`
//! holds the recipients. See `docs/DEMO.md`.

mod burst;
mod daemon;
mod first_contact;
mod not_on_whatsapp;
mod outage;
mod people;
mod replies;
mod simulator;
mod stage;
mod summary;
mod ui;
mod waq;
mod workdir;

use std::time::{Duration, Instant};

use anyhow::Context;

use stage::Stage;
use ui::Ui;

/// Exit code after Ctrl-C (128 + SIGINT), as shells expect.
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Messages in the burst (chapter 3).
    #[arg(long, value_name = "N", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(10..=10_000))]
    pub messages: u32,
    /// The simulated number's messages-per-second limit (Meta: 80, 1,000 after the upgrade).
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub mps: u32,
}

/// What the chapters report to the summary.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub refused_at_enqueue: u64,
    pub fallback_sent: u64,
    pub free_form_sent: u64,
    pub burst_seconds: f64,
    pub outage_messages: u64,
    pub outage_retries: u64,
}

/// Runs the demo; returns the exit code (0 done, 1 failed, 130 interrupted).
pub fn run(args: DemoArgs) -> i32 {
    let ui = Ui::new();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waq demo: cannot start the runtime: {e}");
            return 1;
        }
    };
    // The story runs on this thread (`block_on`); so does the spawn of the daemon, which ties
    // the daemon's PR_SET_PDEATHSIG to a thread that lives as long as the process.
    let outcome = runtime.block_on(async {
        let signals = Interrupt::install()?;
        tokio::select! {
            r = play(&args, &ui) => r.map(|()| Ending::Played),
            () = signals.wait() => Ok(Ending::Interrupted),
            // Like `waq ls | head -1`: the reader is gone, so the story ends quietly.
            () = crate::cli::out::gone() => Ok(Ending::ReaderGone),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(Ending::Played) => 0,
        Ok(Ending::ReaderGone) => crate::cli::out::gone_code(),
        Ok(Ending::Interrupted) => {
            eprintln!(
                "waq demo: interrupted; the daemon and the simulator are stopped and the temporary directory is removed"
            );
            EXIT_INTERRUPTED
        }
        Err(e) => {
            eprintln!("waq demo: {e:#}");
            1
        }
    }
}

/// How the demo ended, when it did not fail. Dropping `play` early stops the daemon and the
/// simulator and removes the temporary directory (the stage's guards).
enum Ending {
    Played,
    Interrupted,
    ReaderGone,
}

async fn play(args: &DemoArgs, ui: &Ui) -> anyhow::Result<()> {
    let started = Instant::now();
    ui.title(
        "waq demo: a durable outbound queue for the WhatsApp Cloud API, against a simulated Meta",
    );
    let stage = Stage::open(args, ui).await?;
    let mut tally = Tally::default();
    first_contact::play(&stage, ui, &mut tally).await?;
    replies::play(&stage, ui, &mut tally).await?;
    // Let the story's receipts arrive so the burst's bars count the burst alone.
    stage.settle(Duration::from_secs(30)).await?;
    burst::play(&stage, ui, &mut tally, args.messages).await?;
    not_on_whatsapp::play(&stage, ui).await?;
    outage::play(&stage, ui, &mut tally, (args.messages / 20).clamp(10, 100)).await?;
    let report = summary::gather(&stage, &tally, started.elapsed()).await?;
    report.print(ui);
    ui.blank();
    stage.close(ui).await?;
    report.check()?;
    ui.say(
        "Next: run `waq sim` and `waq serve` yourself, as the README's \"Try it by hand\" shows.",
    );
    Ok(())
}

/// Ctrl-C (SIGINT) and SIGTERM, caught so that the stage's guards run instead of the process
/// dying with a daemon and a directory left behind.
struct Interrupt {
    handle: signal_hook::iterator::Handle,
    waiter: tokio::task::JoinHandle<()>,
}

impl Interrupt {
    fn install() -> anyhow::Result<Interrupt> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .context("cannot install signal handlers")?;
        let handle = signals.handle();
        let waiter = tokio::task::spawn_blocking(move || {
            let _ = signals.forever().next();
        });
        Ok(Interrupt { handle, waiter })
    }

    /// Resolves at the first signal.
    async fn wait(mut self) {
        let _ = (&mut self.waiter).await;
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        // Ends the blocking thread that waits for signals.
        self.handle.close();
    }
}
