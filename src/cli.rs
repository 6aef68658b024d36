//! Command line: argument parsing (clap) and hand-over to the library; nothing else.
//!
//! Exit codes (documented in the README): 0 success; 1 the run failed (output could not
//! be written); 2 usage or configuration error; 3 a capture was damaged or unreadable
//! (records for everything read before the damage were written); 130 interrupted by
//! SIGINT/SIGTERM (records for everything read were written).

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use mirrorflow::config::{Config, SessionMap};
use mirrorflow::decap::TunnelPorts;
use mirrorflow::gen::{self, GenOptions};
use mirrorflow::record::{OutputKind, RecordFormat};
use mirrorflow::runtime::send::{send, SendOptions};
use mirrorflow::runtime::serve::{serve, ServeOptions};
use mirrorflow::runtime::{replay, stop_on_signals, ReplayOptions};
use mirrorflow::sink::Destination;
use std::net::ToSocketAddrs;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_DAMAGED_CAPTURE: i32 = 3;
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser)]
#[command(
    name = "mirrorflow",
    version,
    about = "AWS VPC Traffic Mirroring in, exact VPC Flow Log records out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// AWS flow-log text (default format, or --format)
    Text,
    /// JSON lines with AWS field names as keys
    Json,
    /// Parquet with AWS's column names and types (needs --out FILE)
    Parquet,
}

#[derive(Clone, Copy, ValueEnum)]
enum QueryOutput {
    /// An aligned table
    Table,
    /// Comma-separated values with a header row
    Csv,
    /// One JSON object per row
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Replay pcap/pcapng captures through the pipeline and write flow-log records
    Replay {
        /// Capture files (pcap or pcapng; plain, VXLAN or GENEVE)
        #[arg(required = true)]
        captures: Vec<PathBuf>,
        /// Record encoding
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// AWS custom format, e.g. '${version} ${srcaddr} ${dstaddr} ${tcp-flags}'
        #[arg(long)]
        format: Option<String>,
        /// Write records here instead of stdout
        #[arg(long)]
        out: Option<PathBuf>,
        /// Worker threads (flow tables); default: number of cores
        #[arg(long)]
        workers: Option<usize>,
        /// Aggregation interval in seconds: 60 or 600
        #[arg(long)]
        interval: Option<u64>,
        /// TOML configuration (sessions, timeouts, format)
        #[arg(long)]
        config: Option<PathBuf>,
        /// UDP destination port that carries VXLAN
        #[arg(long)]
        vxlan_port: Option<u16>,
        /// UDP destination port that carries GENEVE
        #[arg(long)]
        geneve_port: Option<u16>,
        /// Do not print the summary at the end
        #[arg(long, short)]
        quiet: bool,
        /// Flow records only: no payload inspection
        #[arg(long)]
        no_inspect: bool,
        /// Write run measurements as JSON here (used by `bench`, which runs each
        /// measurement in a fresh process)
        #[arg(long, hide = true)]
        bench_report: Option<PathBuf>,
    },
    /// Run the appliance: receive VXLAN/GENEVE mirror traffic, write flow-log records
    Serve {
        /// TOML configuration (sockets, allowlists, sessions, sink)
        #[arg(long)]
        config: PathBuf,
    },
    /// Replay a capture as AWS-style VXLAN datagrams to a running appliance
    Send {
        /// Capture file (plain frames are wrapped in VXLAN; VXLAN frames are sent as is)
        capture: PathBuf,
        /// Destination, e.g. 127.0.0.1:4789
        #[arg(long)]
        to: String,
        /// VNI for wrapped frames
        #[arg(long, default_value_t = 5_569_041)]
        vni: u32,
        /// Packets per second (0 = as fast as possible)
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Times to send the capture
        #[arg(long = "loop", default_value_t = 1)]
        loops: u64,
        /// UDP port that marks VXLAN frames already in the capture
        #[arg(long, default_value_t = 4789)]
        vxlan_port: u16,
    },
    /// Answer a CloudWatch Logs Insights–style query over flow records or AWS flow logs
    Query {
        /// The query, e.g. 'filter action="REJECT" | stats count(*) by srcAddr'
        query: String,
        /// Record files or directories (mirrorflow JSON/text, AWS flow-log .log/.log.gz, S3 layout)
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Result encoding
        #[arg(long, value_enum, default_value = "table")]
        output: QueryOutput,
    },
    /// Write a self-contained HTML report (tables and SVG charts) over flow records
    Report {
        /// Record files or directories (as for query)
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The page to write
        #[arg(long)]
        html: PathBuf,
    },
    /// Measure the pipeline on a capture against the walk-the-capture baseline
    Bench {
        /// Capture to measure; without one, the same traffic is generated plain and
        /// VXLAN-wrapped and both are measured
        capture: Option<PathBuf>,
        /// Worker counts to run, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        /// Flows to generate when no capture is given
        #[arg(long, default_value_t = 40_000)]
        flows: usize,
        /// Runs per figure (the median is reported). Eleven by default: on a shared VM
        /// the median of three side-by-side runs of the twins moved by tens of percent
        /// from one bench to the next
        #[arg(long, default_value_t = 11)]
        runs: usize,
        /// Measure `serve` on loopback instead (against a bare recvmmsg loop, with
        /// `send` on the other core); the capture is sent this many times
        #[arg(long, value_name = "LOOPS")]
        serve: Option<u64>,
    },
    /// Generate deterministic AWS-mirror-like traffic and its ground truth (FILE.truth.jsonl)
    Gen {
        /// Capture to write (classic pcap)
        #[arg(long)]
        out: PathBuf,
        /// Number of flows (sessions) to generate
        #[arg(long, default_value_t = 200)]
        flows: usize,
        /// Random seed; the same seed and options give the same bytes
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Wrap every packet in VXLAN as AWS Traffic Mirroring does
        #[arg(long)]
        vxlan: bool,
        /// VNI of the mirror session (with --vxlan)
        #[arg(long, default_value_t = 5_569_041)]
        vni: u32,
        /// Keep only the first N bytes after the VXLAN header (the session's PacketLength);
        /// without --vxlan, the capture's snap length
        #[arg(long)]
        truncate: Option<usize>,
        /// Share of flows over IPv6, 0.0 to 1.0
        #[arg(long, default_value_t = 0.2)]
        ipv6_share: f64,
        /// TCP receivers acknowledge every second full segment, as Linux does, instead
        /// of once per burst: smaller mean packets (about 790 bytes instead of 1,000)
        #[arg(long)]
        delayed_ack: bool,
        /// Instead of sessions, a flood for overload tests: syn, fragments or bad-vxlan
        #[arg(long)]
        flood: Option<mirrorflow::gen::flood::Flood>,
        /// Packets in the flood
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
    },
}

pub fn run() -> i32 {
    // Before anything else, so no signal can kill a run between opening its output and
    // being able to flush it.
    let stop = match stop_on_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mirrorflow: cannot install signal handlers: {e}");
            return EXIT_FAILED;
        }
    };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            // One line: clap's message up to its usage and help hints.
            let text = e.to_string();
            let head = text.split("\n\nUsage:").next().unwrap_or(&text);
            let head = head
                .split("\n\nFor more information")
                .next()
                .unwrap_or(head);
            eprintln!(
                "mirrorflow: {}",
                head.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            return EXIT_USAGE;
        }
        Err(e) => {
            let _ = e.print();
            return EXIT_OK;
        }
    };
    match cli.command {
        Command::Replay {
            captures,
            output,
            format,
            out,
            workers,
            interval,
            config,
            vxlan_port,
            geneve_port,
            quiet,
            no_inspect,
            bench_report,
        } => {
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("mirrorflow: {e}");
                        return EXIT_USAGE;
                    }
                },
                None => Config::default(),
            };
            let mut capture = config.capture.clone();
            if let Some(i) = interval {
                capture.interval = i;
            }
            if let Some(p) = vxlan_port {
                capture.vxlan_port = p;
            }
            if let Some(p) = geneve_port {
                capture.geneve_port = p;
            }
            let checked = Config {
                capture: capture.clone(),
                ..config.clone()
            };
            if let Err(e) = checked.validate() {
                eprintln!("mirrorflow: {}", e.replace("key 'capture.", "option '--"));
                return EXIT_USAGE;
            }
            let kind = match output {
                Output::Text => OutputKind::Text,
                Output::Json => OutputKind::Json,
                Output::Parquet => OutputKind::Parquet,
            };
            if kind == OutputKind::Parquet && out.is_none() {
                eprintln!("mirrorflow: option '--output' = parquet: needs --out FILE");
                return EXIT_USAGE;
            }
            let format_spec = format.or(config.output.format.clone());
            let format = match (kind, format_spec) {
                (_, Some(spec)) => match RecordFormat::custom(kind, &spec) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("mirrorflow: --format: {e}");
                        return EXIT_USAGE;
                    }
                },
                (OutputKind::Text, None) => RecordFormat::default_text(),
                (OutputKind::Json | OutputKind::Parquet, None) => RecordFormat::json_as(kind),
            };
            let workers = workers.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            if workers == 0 || workers > 1024 {
                eprintln!("mirrorflow: option '--workers' = {workers}: must be between 1 and 1024");
                return EXIT_USAGE;
            }
            let opts = ReplayOptions {
                captures,
                workers,
                interval_s: capture.interval,
                timeouts: config.timeouts.clone(),
                inspect: if no_inspect {
                    mirrorflow::config::InspectConfig {
                        enabled: false,
                        ..config.inspect.clone()
                    }
                } else {
                    config.inspect.clone()
                },
                detect: config.detect.clone(),
                max_flows: config.limits.max_flows,
                ports: TunnelPorts {
                    vxlan: capture.vxlan_port,
                    geneve: capture.geneve_port,
                },
                sessions: Arc::new(SessionMap::new(&config.sessions)),
                format,
                destination: out.map(Destination::File).unwrap_or(Destination::Stdout),
                progress: !quiet,
                stop,
            };
            let sampler = bench_report
                .as_ref()
                .map(|_| mirrorflow::runtime::bench::AnonSampler::start());
            match replay(opts) {
                Ok(outcome) => {
                    if let (Some(path), Some(sampler)) = (&bench_report, sampler) {
                        let report = mirrorflow::runtime::bench::report_json(&outcome, sampler);
                        if let Err(e) = std::fs::write(path, report) {
                            eprintln!("mirrorflow: {}: {e}", path.display());
                            return EXIT_FAILED;
                        }
                    }
                    if !quiet {
                        eprint!("{}", outcome.summary.render());
                    }
                    for e in &outcome.capture_errors {
                        eprintln!("mirrorflow: damaged capture: {e}");
                    }
                    if outcome.interrupted {
                        eprintln!(
                            "mirrorflow: interrupted; records for everything read were written"
                        );
                        EXIT_INTERRUPTED
                    } else if !outcome.capture_errors.is_empty() {
                        EXIT_DAMAGED_CAPTURE
                    } else {
                        EXIT_OK
                    }
                }
                Err(e) => {
                    eprintln!("mirrorflow: {e}");
                    EXIT_FAILED
                }
            }
        }
        Command::Bench {
            capture,
            workers,
            flows,
            runs,
            serve,
        } => {
            if let Some(loops) = serve {
                return bench_serve(capture, loops.max(1));
            }
            if let Some(w) = workers.iter().find(|w| **w == 0 || **w > 1024) {
                eprintln!("mirrorflow: option '--workers' = {w}: must be between 1 and 1024");
                return EXIT_USAGE;
            }
            if flows == 0 || runs == 0 {
                eprintln!("mirrorflow: options '--flows' and '--runs' must be at least 1");
                return EXIT_USAGE;
            }
            let opts = mirrorflow::runtime::bench::BenchOptions {
                capture,
                workers,
                flows,
                runs,
                stop,
            };
            match mirrorflow::runtime::bench::run(&opts) {
                Ok(results) => {
                    print!("{}", mirrorflow::runtime::bench::render(&results));
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("mirrorflow: bench: {e}");
                    EXIT_DAMAGED_CAPTURE
                }
            }
        }
        Command::Query {
            query,
            inputs,
            output,
        } => {
            let commands = match mirrorflow::query::parse::parse(&query) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mirrorflow: query: {e}");
                    return EXIT_USAGE;
                }
            };
            let rows = match mirrorflow::query::input::read_all(&inputs) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("mirrorflow: {e}");
                    return EXIT_FAILED;
                }
            };
            match mirrorflow::query::eval::run(&commands, rows) {
                Ok(t) => {
                    let text = match output {
                        QueryOutput::Table => mirrorflow::query::output::table(&t),
                        QueryOutput::Csv => mirrorflow::query::output::csv(&t),
                        QueryOutput::Json => mirrorflow::query::output::json(&t),
                    };
                    print!("{text}");
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("mirrorflow: query: {e}");
                    EXIT_USAGE
                }
            }
        }
        Command::Report { inputs, html } => {
            let rows = match mirrorflow::query::input::read_all(&inputs) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("mirrorflow: {e}");
                    return EXIT_FAILED;
                }
            };
            let n = rows.len();
            let names = inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ");
            match mirrorflow::report::render(rows, &names) {
                Ok(page) => match std::fs::write(&html, page) {
                    Ok(()) => {
                        eprintln!("mirrorflow report: {n} records -> {}", html.display());
                        EXIT_OK
                    }
                    Err(e) => {
                        eprintln!("mirrorflow: {}: {e}", html.display());
                        EXIT_FAILED
                    }
                },
                Err(e) => {
                    eprintln!("mirrorflow: report: {e}");
                    EXIT_FAILED
                }
            }
        }
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mirrorflow: {e}");
                    return EXIT_USAGE;
                }
            };
            let kind = if cfg.sink.encoding == "json" {
                OutputKind::Json
            } else {
                OutputKind::Text
            };
            let format = match (&cfg.output.format, kind) {
                (Some(spec), _) => match RecordFormat::custom(kind, spec) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("mirrorflow: {}: key 'output.format': {e}", config.display());
                        return EXIT_USAGE;
                    }
                },
                (None, OutputKind::Text) => RecordFormat::default_text(),
                // serve's sinks write text or JSON lines (sink.encoding); never Parquet.
                (None, OutputKind::Json | OutputKind::Parquet) => RecordFormat::json(),
            };
            let reload = Arc::new(std::sync::atomic::AtomicBool::new(false));
            if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
            {
                eprintln!("mirrorflow: cannot install the SIGHUP handler: {e}");
                return EXIT_FAILED;
            }
            let opts = ServeOptions {
                config: cfg,
                config_path: Some(config.clone()),
                format,
                stop,
                reload,
            };
            match serve(opts) {
                Ok(summary) => {
                    eprint!("{}", summary.render());
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("mirrorflow: {}: {e}", config.display());
                    EXIT_FAILED
                }
            }
        }
        Command::Send {
            capture,
            to,
            vni,
            rate,
            loops,
            vxlan_port,
        } => {
            let to = match to.to_socket_addrs().ok().and_then(|mut a| a.next()) {
                Some(a) => a,
                None => {
                    eprintln!("mirrorflow: option '--to' = {to}: not a HOST:PORT address");
                    return EXIT_USAGE;
                }
            };
            if vni > 0x00ff_ffff {
                eprintln!(
                    "mirrorflow: option '--vni' = {vni}: a VNI has 24 bits (at most 16777215)"
                );
                return EXIT_USAGE;
            }
            let opts = SendOptions {
                to,
                vni,
                rate,
                loops,
                vxlan_port,
            };
            match send(&capture, &opts) {
                Ok(r) => {
                    let secs = r.elapsed.as_secs_f64().max(1e-9);
                    eprintln!(
                        "mirrorflow send: {} datagrams ({} bytes) to {to} in {:.3}s, {:.0} datagrams/s; {} sent as is, {} wrapped in VXLAN VNI {vni}, {} skipped",
                        r.datagrams, r.bytes, secs, r.datagrams as f64 / secs, r.passed_through, r.wrapped, r.skipped
                    );
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("mirrorflow: send: {e}");
                    EXIT_DAMAGED_CAPTURE
                }
            }
        }
        Command::Gen {
            out,
            flows,
            seed,
            vxlan,
            vni,
            truncate,
            ipv6_share,
            delayed_ack,
            flood,
            packets,
        } => {
            if let Some(kind) = flood {
                return match mirrorflow::gen::flood::write_flood(&out, kind, packets, seed) {
                    Ok(()) => {
                        eprintln!(
                            "mirrorflow gen: {packets} packets of {kind:?} flood -> {}",
                            out.display()
                        );
                        EXIT_OK
                    }
                    Err(e) => {
                        eprintln!("mirrorflow: gen: {}: {e}", out.display());
                        EXIT_FAILED
                    }
                };
            }
            if !(0.0..=1.0).contains(&ipv6_share) {
                eprintln!(
                    "mirrorflow: option '--ipv6-share' = {ipv6_share}: must be between 0 and 1"
                );
                return EXIT_USAGE;
            }
            if vni > 0x00ff_ffff {
                eprintln!(
                    "mirrorflow: option '--vni' = {vni}: a VNI has 24 bits (at most 16777215)"
                );
                return EXIT_USAGE;
            }
            if truncate == Some(0) {
                eprintln!("mirrorflow: option '--truncate' = 0: must be at least 1 byte");
                return EXIT_USAGE;
            }
            let opts = GenOptions {
                flows,
                seed,
                vxlan: vxlan.then_some(vni),
                truncate,
                ipv6_share,
                delayed_ack,
            };
            match gen::write_capture(&out, &opts) {
                Ok(s) => {
                    eprintln!(
                        "mirrorflow gen: {} flows, {} packets, {} bytes (IP) -> {} and {}",
                        s.flows,
                        s.packets,
                        s.ip_bytes,
                        out.display(),
                        gen::truth_path(&out).display()
                    );
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("mirrorflow: gen: {}: {e}", out.display());
                    EXIT_FAILED
                }
            }
        }
    }
}

/// `bench --serve LOOPS [CAPTURE]`: generates a VXLAN capture when none is given.
fn bench_serve(capture: Option<PathBuf>, loops: u64) -> i32 {
    let dir = std::env::temp_dir().join(format!("mirrorflow-bench-{}", std::process::id()));
    let path = match capture {
        Some(p) => p,
        None => {
            let p = dir.join("serve.pcap");
            let opts = mirrorflow::gen::GenOptions {
                flows: 2000,
                seed: 1,
                vxlan: Some(5_569_041),
                truncate: None,
                ipv6_share: 0.2,
                delayed_ack: false,
            };
            if let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|_| mirrorflow::gen::write_capture(&p, &opts).map(|_| ()))
            {
                eprintln!("mirrorflow: bench: {}: {e}", p.display());
                return EXIT_FAILED;
            }
            p
        }
    };
    let result = mirrorflow::runtime::bench_serve::serve_bench(&path, loops);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(r) => {
            print!("{}", mirrorflow::runtime::bench_serve::render_serve(&r));
            EXIT_OK
        }
        Err(e) => {
            eprintln!("mirrorflow: bench --serve: {e}");
            EXIT_FAILED
        }
    }
}
