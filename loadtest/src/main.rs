use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use herald_loadtest::backend::Backend;
use herald_loadtest::baseline::Broadcast;
use herald_loadtest::cluster::Cluster;
use herald_loadtest::report::{plot, Report};
use herald_loadtest::scenarios::fanout::{self, FanoutArgs};
use herald_loadtest::scenarios::faults::{self, FaultArgs, FaultReport};
use herald_loadtest::scenarios::{idle, reconnect};
use herald_loadtest::target::{Target, TargetArgs};
use tokio::signal::unix::{signal, SignalKind};

/// Load tests for Herald. Every run is bounded in time and count and targets loopback only.
#[derive(Parser)]
#[command(name = "herald-loadtest", version)]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    /// Write the JSON report here.
    #[arg(long, global = true)]
    report: Option<PathBuf>,
    /// Write an SVG latency plot here.
    #[arg(long, global = true)]
    plot: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// G groups × M online members, S senders each, open or closed loop.
    Fanout(FanoutArgs),
    /// One group of thousands of online members.
    BigGroup(BigGroupArgs),
    /// Fan-out where a share of every group stops reading; the rest must not notice.
    SlowConsumer(SlowArgs),
    /// The same fan-out against a storage-free broadcast server, then against Herald.
    Baseline(FanoutArgs),
    /// N sessions leave, messages pile up, all come back at once and catch up by pull.
    ReconnectStorm(reconnect::ReconnectArgs),
    /// Hold N idle sessions; report the server's memory per session.
    Idle(idle::IdleArgs),
    /// Faults under load, on a Herald and a PostgreSQL of its own: start before PostgreSQL,
    /// kill -9 cycles, a PostgreSQL outage, a flood of every request kind, SIGTERM; storage
    /// audited after each. With --nodes N ≥ 2, on a cluster: nats-server killed, a node cut
    /// from NATS, a node killed -9.
    Faults(FaultArgs),
}

#[derive(clap::Args)]
struct BigGroupArgs {
    /// Online members of the group.
    #[arg(long, default_value_t = 5000)]
    members: usize,
    /// Sending members.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Offered messages per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
}

#[derive(clap::Args)]
struct SlowArgs {
    #[command(flatten)]
    fanout: FanoutArgs,
    /// Share of each group's members that stop reading.
    #[arg(long, default_value_t = 0.1)]
    stalled_share: f64,
}

/// What a run ends with: a load scenario's report or the fault scenario's.
enum Outcome {
    Load(Report),
    Faults(FaultReport),
}

impl Outcome {
    fn print(&self) {
        match self {
            Outcome::Load(report) => report.print(),
            Outcome::Faults(report) => report.print(),
        }
    }

    /// Why the run failed, if it did.
    fn failure(&self) -> Option<String> {
        match self {
            Outcome::Load(report) if report.lost_anywhere() > 0 => {
                Some(format!("{} messages lost", report.lost_anywhere()))
            }
            Outcome::Faults(report) if !report.passed() => Some(format!(
                "{} messages lost, {} checks failed",
                report.lost,
                report.failed().len()
            )),
            _ => None,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let stopped = match stop_signal() {
        Ok(stopped) => stopped,
        Err(error) => {
            eprintln!("herald-loadtest: listening for SIGINT and SIGTERM: {error}");
            return ExitCode::from(2);
        }
    };
    // Stopped by a signal (Ctrl-C, `timeout`, a script's kill), the run is dropped, and with
    // it everything it started: Herald, the nodes, nats-server, PostgreSQL, the database.
    let outcome = tokio::select! {
        outcome = run(cli) => outcome,
        signal = stopped => Err(anyhow!("stopped by {signal}")),
    };
    match outcome {
        Ok(outcome) => {
            outcome.print();
            match outcome.failure() {
                None => ExitCode::SUCCESS,
                Some(failure) => {
                    eprintln!("herald-loadtest: {failure}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("herald-loadtest: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The first SIGINT or SIGTERM from now on, by name.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}

async fn run(cli: Cli) -> Result<Outcome> {
    // One descriptor per session: as many as allowed (root may lift the hard limit too).
    const WANTED: u64 = 1 << 20;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED, WANTED).is_err() {
        rlimit::increase_nofile_limit(u64::MAX)?;
    }
    let (report, series) = match &cli.scenario {
        Scenario::Fanout(args) => {
            let backend = open_herald(&cli.target, args.nodes).await?;
            let run = fanout::run(&backend, args, "fanout").await?;
            if let Backend::Herald(target) = &backend {
                if let Some(received) = target.webhooks_received() {
                    eprintln!("{received}");
                }
            }
            run.into_parts("Herald")
        }
        Scenario::BigGroup(args) => {
            let args = FanoutArgs {
                groups: 1,
                members: args.members,
                senders: args.senders,
                rate: args.rate,
                window: None,
                duration_s: args.duration_s,
                warmup_s: args.warmup_s,
                body_bytes: args.body_bytes,
                ack_ms: 1000,
                stalled_share: 0.0,
                nodes: 1,
            };
            fanout::run(&open_herald(&cli.target, 1).await?, &args, "big-group")
                .await?
                .into_parts("Herald")
        }
        Scenario::SlowConsumer(args) => {
            let mut fanout_args = args.fanout.clone();
            fanout_args.stalled_share = args.stalled_share;
            let backend = open_herald(&cli.target, fanout_args.nodes).await?;
            fanout::run(&backend, &fanout_args, "slow-consumer")
                .await?
                .into_parts("Herald, readers")
        }
        Scenario::Baseline(args) => {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let ceiling = fanout::run(
                &Backend::Baseline(Broadcast::start(cores)?),
                args,
                "baseline",
            )
            .await?;
            let backend = open_herald(&cli.target, args.nodes).await?;
            let (mut report, herald_series) = fanout::run(&backend, args, "fanout vs baseline")
                .await?
                .into_parts("Herald");
            let (ceiling, mut series) = ceiling.into_parts("baseline");
            report.vs_baseline = Some(report.deliveries_per_s / ceiling.deliveries_per_s.max(1.0));
            report.baseline = Some(Box::new(ceiling));
            series.extend(herald_series);
            (report, series)
        }
        Scenario::ReconnectStorm(args) => (
            reconnect::run(&open_herald(&cli.target, 1).await?, args).await?,
            vec![],
        ),
        Scenario::Idle(args) => (
            idle::run(&open_herald(&cli.target, 1).await?, args).await?,
            vec![],
        ),
        Scenario::Faults(args) => return run_faults(&cli, args).await,
    };
    if let Some(path) = &cli.report {
        report.write_json(path)?;
    }
    if let Some(path) = &cli.plot {
        let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> =
            series.iter().map(|(name, h)| (name.as_str(), h)).collect();
        plot(
            path,
            &format!("{}: delivery latency", report.scenario),
            &series,
        )?;
    }
    Ok(Outcome::Load(report))
}

/// One Herald, or a cluster of `nodes` when a fan-out asks for more.
async fn open_herald(target: &TargetArgs, nodes: usize) -> Result<Backend> {
    match nodes {
        0 => anyhow::bail!("--nodes must be at least 1"),
        1 => Ok(Backend::Herald(Target::open(target).await?)),
        _ => Ok(Backend::Cluster(Cluster::start(target, nodes).await?)),
    }
}

/// The fault scenario: its own report, no latency plot.
async fn run_faults(cli: &Cli, args: &FaultArgs) -> Result<Outcome> {
    if cli.plot.is_some() {
        anyhow::bail!("--plot does not apply to faults");
    }
    let report = faults::run(&cli.target, args).await?;
    if let Some(path) = &cli.report {
        report.write_json(path)?;
    }
    Ok(Outcome::Faults(report))
}
