//! `waq bench`: the reproducible load run. Starts a real daemon (this binary, `serve`) on a
//! temporary state directory and an in-process Cloud API simulator, drives the daemon over its
//! socket, and prints each figure of the performance targets on one line:
//! `figure: value (target …) PASS|MISS [details]`.
//!
//! Parts: `enqueue` (single messages, 64 connections), `batch` (1,000 per request), `latency`
//! (p99 at 10,000 msg/s offered), `dispatch` (80 and 1,000 MPS against a 100 ms simulator),
//! `cpu` (daemon CPU per 1,000 dispatched at 1,000 MPS), `million` (1,000,000 queued: memory,
//! disk, restart, and enqueue / dispatch at that depth against the empty figures).
//! See `docs/PERFORMANCE.md` for the method and the figures.

pub mod client;
mod daemon;
mod dispatch;
mod load;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::body::Bytes;
use serde::Serialize;

use crate::cli::out;
use daemon::{Daemon, Setup};
use load::{parked_until, Work};

/// How long after the `million_rss` reading the settled reading is taken.
const RSS_SETTLE: Duration = Duration::from_secs(12);

/// The parts of the run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Enqueue,
    Batch,
    Latency,
    Dispatch,
    Cpu,
    Million,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Short windows, one run per figure, and no `million` unless asked for (a minute or two).
    #[arg(long)]
    pub quick: bool,
    /// Only these parts (comma-separated): enqueue, batch, latency, dispatch, cpu, million.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Print the figures as one JSON document instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Runs per throughput figure; the median is reported (default: 3, or 1 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Where the temporary state directories go (on the disk to be measured).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (state, configuration, daemon log) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Drive an already running daemon on this socket instead of starting one, with a fixed
    /// amount of work (for profiling the daemon under a tool such as callgrind): `--only
    /// enqueue` sends --requests single requests over 64 connections, `--only batch` --requests
    /// batches of 1,000 over 4, `--only dispatch` enqueues --requests messages due now and waits
    /// until the daemon has sent them all.
    #[arg(long, value_name = "SOCKET")]
    pub attach: Option<PathBuf>,
    /// `store.cache_capacity_mb` of the daemons under test (default: the daemon's own default).
    #[arg(long, value_name = "MIB")]
    pub cache_mb: Option<u64>,
    /// Requests (or messages, for dispatch) of an --attach run.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
}

/// One figure of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub figure: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// `>=` or `<=` the target; absent for figures shown for information.
    pub target: Option<(&'static str, f64)>,
    pub pass: Option<bool>,
    /// Every run's value, when the figure is a median.
    pub runs: Vec<f64>,
    pub detail: String,
}

impl Figure {
    fn new(figure: &'static str, value: f64, unit: &'static str) -> Figure {
        Figure {
            figure,
            value,
            unit,
            target: None,
            pass: None,
            runs: Vec::new(),
            detail: String::new(),
        }
    }

    fn at_least(mut self, t: f64) -> Figure {
        self.target = Some((">=", t));
        self.pass = Some(self.value >= t);
        self
    }

    fn at_most(mut self, t: f64) -> Figure {
        self.target = Some(("<=", t));
        self.pass = Some(self.value <= t);
        self
    }

    fn runs(mut self, runs: Vec<f64>) -> Figure {
        self.runs = runs;
        self
    }

    fn detail(mut self, d: impl Into<String>) -> Figure {
        self.detail = d.into();
        self
    }

    fn line(&self) -> String {
        let mut s = format!("{}: {} {}", self.figure, num(self.value), self.unit);
        if let Some((op, t)) = self.target {
            let op = if op == ">=" { "≥" } else { "≤" };
            s.push_str(&format!(" (target {op} {} {})", num(t), self.unit));
        }
        match self.pass {
            Some(true) => s.push_str(" PASS"),
            Some(false) => s.push_str(" MISS"),
            None => {}
        }
        let mut extra = Vec::new();
        if self.runs.len() > 1 {
            let all: Vec<String> = self.runs.iter().map(|v| num(*v)).collect();
            extra.push(format!(
                "median of {}: {}",
                self.runs.len(),
                all.join(" / ")
            ));
        }
        if !self.detail.is_empty() {
            extra.push(self.detail.clone());
        }
        if !extra.is_empty() {
            s.push_str(&format!(" [{}]", extra.join("; ")));
        }
        s
    }
}

/// A number for people: thousands separated, at most 3 significant decimals below 10.
fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        let r = v.round() as i64;
        let digits = r.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if r < 0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Window lengths of one run.
struct Plan {
    runs: usize,
    warmup: Duration,
    measure: Duration,
    dispatch_warmup: Duration,
    dispatch_measure: Duration,
    dispatch_80_measure: Duration,
    million: u64,
}

/// Runs the load run; returns the process exit code (0 even when figures miss: it measures).
pub fn run(args: BenchArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waq bench: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run_async(args)) {
        // 0 unless the output could not be written (`out::gone_code`).
        Ok(()) => out::gone_code(),
        Err(e) => {
            eprintln!("waq bench: {e:#}");
            1
        }
    }
}

async fn run_async(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(socket) = &args.attach {
        return attached(socket, args.only.first().copied(), args.requests).await;
    }
    let plan = if args.quick {
        Plan {
            runs: args.runs.unwrap_or(1),
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(3),
            dispatch_warmup: Duration::from_secs(2),
            dispatch_measure: Duration::from_secs(5),
            dispatch_80_measure: Duration::from_secs(8),
            million: 1_000_000,
        }
    } else {
        Plan {
            runs: args.runs.unwrap_or(3).max(1),
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(8),
            dispatch_warmup: Duration::from_secs(3),
            dispatch_measure: Duration::from_secs(10),
            dispatch_80_measure: Duration::from_secs(20),
            million: 1_000_000,
        }
    };
    let parts: Vec<Part> = if args.only.is_empty() {
        let mut p = vec![
            Part::Enqueue,
            Part::Batch,
            Part::Latency,
            Part::Dispatch,
            Part::Cpu,
        ];
        if !args.quick {
            p.push(Part::Million);
        }
        p
    } else {
        args.only.clone()
    };
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!(
        "waq-bench-{}-{}",
        std::process::id(),
        crate::model::now_ms()
    ));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // The daemons' configs live in it and name their paths in it: written absolute, as a
    // relative one would be taken from the config's own directory.
    let root = std::path::absolute(&root).unwrap_or(root);
    let mut bench = Bench {
        cache_mb: args.cache_mb,
        root: root.clone(),
        plan,
        json: args.json,
        figures: Vec::new(),
        next_dir: 0,
    };
    bench.say(&format!(
        "waq bench: {} CPUs, {} build, {} run(s) per throughput figure, store cache {}, state under {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "debug (figures meaningless)"
        } else {
            "release"
        },
        bench.plan.runs,
        args.cache_mb
            .map_or("default".to_string(), |m| format!("{m} MiB")),
        root.display()
    ));
    // A reader that is gone (`waq bench | head -3`) ends the run: its daemons stop as it is
    // dropped, and the directory is removed below.
    let result = tokio::select! {
        r = bench.run_parts(&parts) => r,
        () = out::gone() => Ok(()),
    };
    if args.json {
        out::line_or_note(format_args!(
            "{}",
            serde_json::to_string_pretty(&bench.figures)?
        ));
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

struct Bench {
    cache_mb: Option<u64>,
    root: PathBuf,
    plan: Plan,
    json: bool,
    figures: Vec<Figure>,
    next_dir: usize,
}

impl Bench {
    /// Progress and figures go to stdout as lines, or to stderr when the output is JSON.
    fn say(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            out::line_or_note(format_args!("{line}"));
        }
    }

    fn push(&mut self, f: Figure) {
        self.say(&f.line());
        self.figures.push(f);
    }

    async fn run_parts(&mut self, parts: &[Part]) -> anyhow::Result<()> {
        if parts.contains(&Part::Enqueue) {
            self.enqueue().await?;
        }
        if parts.contains(&Part::Batch) {
            self.batch().await?;
        }
        if parts.contains(&Part::Latency) {
            self.latency().await?;
        }
        if parts.contains(&Part::Dispatch) || parts.contains(&Part::Cpu) {
            self.dispatch(parts.contains(&Part::Dispatch), parts.contains(&Part::Cpu))
                .await?;
        }
        if parts.contains(&Part::Million) {
            self.million().await?;
        }
        Ok(())
    }

    /// A fresh daemon in its own directory, sending to `sim_url` at `mps`.
    async fn daemon(&mut self, sim_url: &str, mps: u32) -> anyhow::Result<Daemon> {
        self.next_dir += 1;
        let dir = self.root.join(format!("d{}", self.next_dir));
        std::fs::create_dir_all(&dir)?;
        let mut d = Daemon::new(
            &dir,
            &Setup {
                sim_url: sim_url.to_string(),
                phone_number_id: dispatch::PHONE_NUMBER_ID.into(),
                token: dispatch::TOKEN.into(),
                mps,
                cache_mb: self.cache_mb,
            },
        )?;
        d.start().await?;
        Ok(d)
    }

    /// `plan.runs` closed-loop runs of `requests`, each on a fresh daemon. Nothing is
    /// dispatched (every message is parked), so no simulator is needed. Returns the median
    /// rate, every run's rate, and the run closest to the median (for its details).
    async fn closed_loop_runs(
        &mut self,
        requests: Arc<Vec<Bytes>>,
        per_request: u64,
        connections: usize,
    ) -> anyhow::Result<(f64, Vec<f64>, load::Throughput)> {
        let mut details = Vec::new();
        for _ in 0..self.plan.runs.max(1) {
            let mut d = self.daemon("http://127.0.0.1:9", 80).await?;
            let work = Work {
                requests: requests.clone(),
                per_request,
                connections,
            };
            let t = load::closed_loop(&d, work, self.plan.warmup, self.plan.measure).await?;
            d.stop().await?;
            details.push(t);
        }
        let rates: Vec<f64> = details.iter().map(|t| t.rate).collect();
        let m = median(rates.clone());
        Ok((m, rates, closest(&details, m, |t| t.rate)))
    }

    /// Closed-loop single enqueues over 64 connections, each run on a fresh daemon.
    async fn enqueue(&mut self) -> anyhow::Result<()> {
        let (m, rates, t) = self.closed_loop_runs(single_bodies(), 1, 64).await?;
        self.push(
            Figure::new("enqueue_single_64conn", m, "msg/s")
                .at_least(70_000.0)
                .runs(rates)
                .detail(format!(
                    "daemon CPU {:.2} cores, generator CPU {:.2} cores, {:.1} messages per fsync; BullMQ 33,900",
                    t.daemon_cpu,
                    t.generator_cpu,
                    t.rate / t.commits_per_s.max(1.0)
                )),
        );
        Ok(())
    }

    /// Closed-loop batches of 1,000 over 4 connections.
    async fn batch(&mut self) -> anyhow::Result<()> {
        let bodies: Arc<Vec<Bytes>> = Arc::new(
            (0..8u64)
                .map(|i| {
                    let body = load::batch_request(i * 1000, 1000, &parked_until());
                    client::raw_request("POST", "/v1/messages/batch", body.as_bytes())
                })
                .collect(),
        );
        let (m, rates, t) = self.closed_loop_runs(bodies, 1000, 4).await?;
        self.push(
            Figure::new("enqueue_batch_1000", m, "msg/s")
                .at_least(250_000.0)
                .runs(rates)
                .detail(format!(
                    "4 connections; daemon CPU {:.2} cores, generator CPU {:.2} cores; BullMQ 26,300",
                    t.daemon_cpu, t.generator_cpu
                )),
        );
        Ok(())
    }

    /// Open loop at 10,000 msg/s; p99 from when each request was due.
    async fn latency(&mut self) -> anyhow::Result<()> {
        let bodies = single_bodies();
        let mut p99s = Vec::new();
        let mut details = Vec::new();
        for _ in 0..self.plan.runs {
            let mut d = self.daemon("http://127.0.0.1:9", 80).await?;
            let l = load::open_loop(
                &d,
                bodies.clone(),
                64,
                10_000.0,
                self.plan.warmup,
                self.plan.measure,
            )
            .await?;
            d.stop().await?;
            p99s.push(l.p99_us as f64 / 1000.0);
            details.push(l);
        }
        let m = median(p99s.clone());
        let l = closest(&details, m, |l| l.p99_us as f64 / 1000.0);
        self.push(
            Figure::new("enqueue_p99_at_10k", m, "ms")
                .at_most(5.0)
                .runs(p99s)
                .detail(format!(
                    "achieved {:.0}/s; p50 {:.2} ms, p90 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} samples; daemon CPU {:.2} cores, generator {:.2}",
                    l.achieved,
                    l.p50_us as f64 / 1000.0,
                    l.p90_us as f64 / 1000.0,
                    l.p999_us as f64 / 1000.0,
                    l.max_us as f64 / 1000.0,
                    l.samples,
                    l.daemon_cpu,
                    l.generator_cpu
                )),
        );
        Ok(())
    }

    /// Dispatch at 80 and 1,000 MPS against the simulator (100 ms answers).
    async fn dispatch(&mut self, rates: bool, cpu: bool) -> anyhow::Result<()> {
        let mut plans = Vec::new();
        if rates {
            plans.push((80u32, self.plan.dispatch_80_measure));
        }
        plans.push((1000u32, self.plan.dispatch_measure));
        for (mps, measure) in plans {
            let runs = if mps == 1000 && cpu {
                self.plan.runs
            } else {
                1
            };
            let mut all = Vec::new();
            for _ in 0..runs {
                let sim = dispatch::start_sim(mps).await?;
                let mut d = self.daemon(&sim.base_url(), mps).await?;
                let r = dispatch::run(&d, &sim, mps, 0, self.plan.dispatch_warmup, measure).await?;
                d.stop().await?;
                sim.shutdown().await;
                all.push(r);
            }
            if rates {
                let max = all.iter().map(|r| r.max_in_window).max().unwrap_or(0);
                let throttled: u64 = all.iter().map(|r| r.throttled).sum();
                let bullmq = if mps == 80 { "131-159" } else { "up to 1,285" };
                self.push(
                    Figure::new(dispatch_max_name(mps), max as f64, "msg")
                        .at_most(mps as f64)
                        .detail(format!(
                            "most arrivals at the simulator in any sliding second; {throttled} refused with 130429; BullMQ at {mps}: {bullmq}"
                        )),
                );
                let avgs: Vec<f64> = all.iter().map(|r| r.rate / mps as f64 * 100.0).collect();
                let secs = all.first().map_or(0.0, |r| r.seconds);
                self.push(
                    Figure::new(dispatch_avg_name(mps), median(avgs.clone()), "% of mps")
                        .at_least(99.0)
                        .runs(avgs)
                        .detail(format!(
                            "{:.1} msg/s over {secs:.0} s after {} s of warm-up",
                            median(all.iter().map(|r| r.rate).collect()),
                            self.plan.dispatch_warmup.as_secs()
                        )),
                );
            }
            if mps == 1000 && cpu {
                let cpus: Vec<f64> = all.iter().map(|r| r.cpu_per_1000).collect();
                let sys = median(all.iter().map(|r| r.sys_share * 100.0).collect());
                self.push(
                    Figure::new("cpu_per_1000_dispatched", median(cpus.clone()), "s")
                        .at_most(0.06)
                        .runs(cpus)
                        .detail(format!(
                            "daemon utime+stime at 1,000 MPS, 100 ms simulator, {sys:.0} % of it in the kernel; BullMQ ~0.24 s"
                        )),
                );
            }
        }
        Ok(())
    }

    /// 1,000,000 parked messages: enqueue time, memory, disk, restart, and enqueue / dispatch at
    /// that depth against the same daemon's figures when empty.
    async fn million(&mut self) -> anyhow::Result<()> {
        let total = self.plan.million;
        let sim = dispatch::start_sim(1000).await?;
        let mut d = self.daemon(&sim.base_url(), 1000).await?;
        let bodies = single_bodies();
        let short = self.plan.measure.min(Duration::from_secs(5));
        // Recipients of each dispatch run are new to the pair limiter.
        let (dw, dm) = (self.plan.dispatch_warmup, self.plan.dispatch_measure);
        let e0 = single_run(&d, &bodies, short).await?;
        let d0 = dispatch::run(&d, &sim, 1000, 5_000_000, dw, dm).await?;

        self.say(&format!(
            "million: enqueueing {} parked messages in batches of 1,000 ...",
            num(total as f64)
        ));
        let fill_s = load::fill(&d.socket, 0, total, 1_000, 2, &parked_until()).await?;
        self.push(
            Figure::new("million_enqueue_time", fill_s, "s").detail(format!(
                "{} via batches of 1,000 over 2 connections ({:.0} msg/s); BullMQ 36.7 s",
                num(total as f64),
                total as f64 / fill_s
            )),
        );
        // Let the background flush and segment cleanup settle before looking at memory and disk.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = client::stats(&d.socket).await?;
        let depth = stats["queue_depth"].as_u64().unwrap_or(0);
        let rss = d.rss_bytes()? as f64;
        let disk = d.disk_bytes()? as f64;
        // The fill's own garbage (request bodies, parsed batches) can still be held then;
        // what the daemon holds once it has settled is shown beside it.
        tokio::time::sleep(RSS_SETTLE).await;
        let rss_settled = d.rss_bytes()? as f64;
        let messages = stats["messages"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum::<u64>())
            .unwrap_or(total)
            .max(1);
        self.push(
            Figure::new("million_rss", rss / 1048576.0, "MiB")
                .at_most(256.0)
                .detail(format!(
                    "{} queued (queue_depth), {} stored; {:.0} MiB {} s later",
                    num(depth as f64),
                    num(messages as f64),
                    rss_settled / 1048576.0,
                    RSS_SETTLE.as_secs()
                )),
        );
        self.push(
            Figure::new("million_disk_per_message", disk / messages as f64, "B")
                .at_most(600.0)
                .detail(format!(
                    "state dir {:.0} MiB allocated; sled size_on_disk {:.0} MiB",
                    disk / 1048576.0,
                    stats["disk_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                )),
        );
        let stop_s = d.stop().await?.as_secs_f64();
        let start = d.start().await?.as_secs_f64();
        let rss_after = d.rss_bytes()? as f64 / 1048576.0;
        self.push(
            Figure::new("million_restart_to_serving", start, "s")
                .at_most(3.0)
                .detail(format!("process start to GET /v1/health 200; the SIGTERM stop before it took {stop_s:.2} s; RSS after restart {rss_after:.0} MiB")),
        );
        let e1 = single_run(&d, &bodies, short).await?;
        let d1 = dispatch::run(&d, &sim, 1000, 6_000_000, dw, dm).await?;
        self.push(
            Figure::new("million_enqueue_ratio", e1.rate / e0.rate * 100.0, "%")
                .at_least(80.0)
                .detail(format!(
                    "{:.0} msg/s at depth vs {:.0} msg/s empty (64 connections, same daemon)",
                    e1.rate, e0.rate
                )),
        );
        self.push(
            Figure::new("million_dispatch_ratio", d1.rate / d0.rate * 100.0, "%")
                .at_least(80.0)
                .detail(format!(
                    "{:.1} msg/s at depth vs {:.1} empty at 1,000 MPS; CPU per 1,000 {:.3} s vs {:.3} s; max in a sliding second {}",
                    d1.rate, d0.rate, d1.cpu_per_1000, d0.cpu_per_1000, d1.max_in_window
                )),
        );
        d.stop().await?;
        sim.shutdown().await;
        Ok(())
    }
}

/// A fixed amount of work against a daemon someone else started.
async fn attached(socket: &std::path::Path, part: Option<Part>, n: u64) -> anyhow::Result<()> {
    let (what, secs, messages) = match part {
        None | Some(Part::Enqueue) | Some(Part::Latency) => {
            let s = load::fixed(socket, single_bodies(), n, 64).await?;
            ("single requests over 64 connections", s, n)
        }
        Some(Part::Batch) => {
            let requests: Arc<Vec<Bytes>> = Arc::new(
                (0..8u64)
                    .map(|i| {
                        let body = load::batch_request(i * 1000, 1000, &parked_until());
                        client::raw_request("POST", "/v1/messages/batch", body.as_bytes())
                    })
                    .collect(),
            );
            let s = load::fixed(socket, requests, n, 4).await?;
            ("batches of 1,000 over 4 connections", s, n * 1000)
        }
        Some(Part::Dispatch) | Some(Part::Cpu) | Some(Part::Million) => {
            let sent =
                |v: &serde_json::Value| v["counters"]["sends_accepted"].as_u64().unwrap_or(0);
            let before = sent(&client::stats(socket).await?);
            let started = std::time::Instant::now();
            let now = crate::model::format_time(crate::model::now_ms());
            load::fill(socket, 7_000_000, n, 1_000, 2, &now).await?;
            // Bounded: a daemon that sends nothing for ten minutes is broken.
            let deadline = started + Duration::from_secs(600);
            loop {
                let done = sent(&client::stats(socket).await?) - before;
                if done >= n {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    anyhow::bail!("only {done} of {n} messages were sent within 10 minutes");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (
                "messages enqueued due now and sent",
                started.elapsed().as_secs_f64(),
                n,
            )
        }
    };
    out::line_or_note(format_args!(
        "{} {what} in {secs:.2} s ({:.0} messages/s)",
        num(n as f64),
        messages as f64 / secs
    ));
    Ok(())
}

/// A short closed-loop run of single enqueues over 64 connections.
async fn single_run(
    d: &Daemon,
    bodies: &Arc<Vec<Bytes>>,
    measure: Duration,
) -> anyhow::Result<load::Throughput> {
    load::closed_loop(
        d,
        Work {
            requests: bodies.clone(),
            per_request: 1,
            connections: 64,
        },
        Duration::from_secs(1),
        measure,
    )
    .await
}

fn dispatch_max_name(mps: u32) -> &'static str {
    if mps == 80 {
        "dispatch_80_max_in_sliding_second"
    } else {
        "dispatch_1000_max_in_sliding_second"
    }
}

fn dispatch_avg_name(mps: u32) -> &'static str {
    if mps == 80 {
        "dispatch_80_average"
    } else {
        "dispatch_1000_average"
    }
}

/// The run whose figure is nearest the median, for its details.
fn closest<T: Clone>(all: &[T], m: f64, f: impl Fn(&T) -> f64) -> T {
    let mut best = all[0].clone();
    for x in all {
        if (f(x) - m).abs() < (f(&best) - m).abs() {
            best = x.clone();
        }
    }
    best
}

/// 4,096 distinct parked single requests, cycled by the generator.
fn single_bodies() -> Arc<Vec<Bytes>> {
    Arc::new(
        (0..4096u64)
            .map(|n| {
                let body = load::send_request(n, &parked_until());
                client::raw_request("POST", "/v1/messages", body.as_bytes())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(70000.0), "70,000");
        assert_eq!(num(99.04), "99.0");
        assert_eq!(num(0.0456), "0.046");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn generated_requests_are_valid() {
        let text = load::send_request(7, &parked_until());
        let v = crate::borrowed_json::parse(text.as_bytes()).unwrap();
        let valid = crate::validate::send_request(v, &["main".to_string()]).unwrap();
        assert_eq!(valid.to, "14150000007");
        let b: serde_json::Value =
            serde_json::from_str(&load::batch_request(0, 3, &parked_until())).unwrap();
        assert_eq!(b.as_array().map(Vec::len), Some(3));
    }
}
