//! `sluice bench-serve` (hidden; run it through `cargo xtask bench-serve`): the latency that
//! `sluice serve` adds, measured against calling the same loopback mock directly, in one run.
//!
//! An open-loop generator sends plain chat calls at a fixed rate (bounded in count, time and
//! calls in flight) first straight to a zero-latency mock region, then through a `sluice serve`
//! child process in front of the same mock, and compares p50 and p99.
//!
//! Rounds alternate the two paths. Each round gives an overhead (serve minus direct, p50 and
//! p99) and the serve child's CPU time per call; the table reports the median over rounds, so
//! that one noisy round on a shared machine does not decide the figure. The machine's load
//! average (before and after) and the access-log state are printed with the table.

use std::{
    io::{self, BufRead, BufReader},
    net::SocketAddr,
    process::{ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
    time::Instant,
};

use crate::{CliError, mock::MockRegion, table::Table};

/// Options of `sluice bench-serve`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Request rates to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u32>,
    /// Measured seconds per rate, path and round.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds per rate; each round measures the direct path, then the proxy.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Unmeasured warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Worker threads of the `serve` child (its `--threads`); 0 means one per core.
    #[arg(long, default_value_t = 1)]
    serve_threads: usize,
    /// Worker threads of the load generator and the mock; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    generator_threads: usize,
    /// Runs the `serve` child with `--no-access-log` (the access log is on by default, as in
    /// `sluice serve`; the child's stderr goes to /dev/null either way).
    #[arg(long)]
    no_access_log: bool,
}

impl BenchArgs {
    /// Worker threads for this process.
    pub(crate) fn threads(&self) -> usize {
        self.generator_threads
    }
}

/// Most calls in flight at once; beyond this a call is counted as dropped, not queued.
const MAX_IN_FLIGHT: usize = 2048;

struct Measurement {
    latencies: Histogram<u64>,
    errors: u64,
    dropped: u64,
    late: u64,
}

impl Measurement {
    fn new() -> Self {
        let latencies = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Self { latencies, errors: 0, dropped: 0, late: 0 }
    }
}

/// Runs the benchmark and prints the table.
pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    if args.rates.is_empty() || args.rates.iter().any(|r| *r == 0 || *r > 50_000) {
        return Err(CliError::Usage("--rates must be between 1 and 50000 calls per second".to_owned()));
    }
    if !(0.2..=120.0).contains(&args.seconds)
        || !(0.0..=30.0).contains(&args.warmup)
        || !(1..=20).contains(&args.rounds)
    {
        return Err(CliError::Usage(
            "--seconds must be in 0.2..=120, --warmup in 0..=30, --rounds in 1..=20".to_owned(),
        ));
    }
    let mock = MockRegion::start("bench-1", "Bench", Duration::ZERO)
        .await
        .map_err(|e| CliError::Failed(format!("cannot start the mock region: {e}")))?;
    let dir = std::env::temp_dir().join(format!("sluice-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let config = dir.join("bench.toml");
    let text = format!(
        "[[region]]\nid = \"bench-1\"\nname = \"Bench\"\nurl = \"{}\"\nlat = 37.56\nlon = 126.97\n",
        mock.url()
    );
    std::fs::write(&config, text).map_err(|e| CliError::Failed(format!("cannot write the config: {e}")))?;

    let exe = std::env::current_exe().map_err(|e| CliError::Failed(format!("cannot find this program: {e}")))?;
    let threads = args.serve_threads.to_string();
    let mut serve_args = vec!["serve".into(), "--config".into(), config.clone().into_os_string()];
    serve_args.extend(["--listen", "127.0.0.1:0", "--threads", &threads].map(Into::into));
    if args.no_access_log {
        serve_args.push("--no-access-log".into());
    }
    let (mut serve, serve_addr) = spawn_child(&exe, "sluice serve", &serve_args).await?;
    let floor_args = ["bench-floor", "--upstream", &mock.url(), "--threads", &threads].map(Into::into);
    let (mut floor, floor_addr) = match spawn_child(&exe, "sluice bench-floor", &floor_args).await {
        Ok(x) => x,
        Err(e) => {
            let _ = serve.kill();
            return Err(e);
        }
    };

    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"ping"}],"temperature":0}"#;
    let pools = [RawPool::new(mock.addr(), body), RawPool::new(floor_addr, body), RawPool::new(serve_addr, body)];
    let children = [None, Some(floor.id()), Some(serve.id())];

    let seconds = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
    let mut rows = Vec::new();
    let load_before = load_average();
    println!(
        "bench-serve: {} round(s) of {}s per rate and path (after {}s warm-up), plain chat calls, one zero-latency mock on 127.0.0.1",
        args.rounds, args.seconds, args.warmup
    );
    println!(
        "  serve and floor: {} worker thread(s) each; serve's access log {} (stderr to /dev/null); load average before: {load_before}",
        args.serve_threads,
        if args.no_access_log { "off" } else { "on" }
    );
    println!(
        "  paths: direct (generator to mock), floor (a bare axum + reqwest forwarder: no routing, health, metrics or logs), serve (sluice serve)"
    );
    for &rate in &args.rates {
        // Rounds alternate the paths so that all of them see the same background noise.
        let mut rounds = Vec::new();
        for round in 0..args.rounds {
            let mut measured = [Measurement::new(), Measurement::new(), Measurement::new()];
            let mut ticks = [0u64; 3];
            for (i, pool) in pools.iter().enumerate() {
                if !warmup.is_zero() && round == 0 {
                    let _ = load(pool, rate, warmup).await;
                }
                let before = children[i].and_then(cpu_ticks);
                measured[i] = load(pool, rate, seconds).await;
                let after = children[i].and_then(cpu_ticks);
                if let (Some(a), Some(b)) = (before, after) {
                    ticks[i] = b.saturating_sub(a);
                }
            }
            let round = Round::new(&measured, ticks);
            println!(
                "  {rate:>5} rps round {}: p50/p99 direct {}/{}, floor {}/{}, serve {}/{}; serve overhead p50 {} p99 {}; CPU per call floor {:.1} µs, serve {:.1} µs; errors {}; sent late {}",
                rounds.len() + 1,
                us(round.p[0].0),
                us(round.p[0].1),
                us(round.p[1].0),
                us(round.p[1].1),
                us(round.p[2].0),
                us(round.p[2].1),
                signed_us(round.p[2].0, round.p[0].0),
                signed_us(round.p[2].1, round.p[0].1),
                round.cpu_us[1],
                round.cpu_us[2],
                round.errors.map(|e| e.to_string()).join(" + "),
                round.late.map(|e| e.to_string()).join(" + "),
            );
            rounds.push(round);
        }
        rows.push((rate, rounds));
    }
    for child in [&mut serve, &mut floor] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut table = Table::new(&[
        "rate",
        "direct p50",
        "direct p99",
        "floor p99",
        "serve p50",
        "serve p99",
        "overhead p50",
        "overhead p99",
        "floor CPU/call",
        "serve CPU/call",
        "errors",
    ]);
    let mut failed = false;
    for (rate, rounds) in &rows {
        let med = |f: &dyn Fn(&Round) -> i64| median(rounds.iter().map(f).collect());
        let mut errors = [0u64; 3];
        for r in rounds {
            for (total, e) in errors.iter_mut().zip(r.errors) {
                *total += e;
            }
        }
        failed |= errors.iter().any(|e| *e > 0);
        let cpu = |i: usize| median(rounds.iter().map(|r| (r.cpu_us[i] * 10.0) as i64).collect()) as f64 / 10.0;
        table.row(vec![
            format!("{rate} rps"),
            us(med(&|r| r.p[0].0 as i64) as u64),
            us(med(&|r| r.p[0].1 as i64) as u64),
            us(med(&|r| r.p[1].1 as i64) as u64),
            us(med(&|r| r.p[2].0 as i64) as u64),
            us(med(&|r| r.p[2].1 as i64) as u64),
            signed(med(&|r| r.p[2].0 as i64 - r.p[0].0 as i64)),
            signed(med(&|r| r.p[2].1 as i64 - r.p[0].1 as i64)),
            format!("{:.1} µs", cpu(1)),
            format!("{:.1} µs", cpu(2)),
            errors.map(|e| e.to_string()).join(" + "),
        ]);
    }
    println!();
    println!(
        "median over {} alternating round(s); overhead = serve minus direct; errors = direct + floor + serve; load average after: {}",
        args.rounds,
        load_average()
    );
    print!("{}", table.render());
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Starts this program with `args` and waits for the `http://ADDR` it prints first.
async fn spawn_child(
    exe: &std::path::Path,
    what: &str,
    args: &[std::ffi::OsString],
) -> Result<(std::process::Child, SocketAddr), CliError> {
    let mut child = std::process::Command::new(exe)
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| CliError::Failed(format!("cannot start {what}: {e}")))?;
    let stdout = child.stdout.take().ok_or_else(|| CliError::Failed(format!("no stdout from {what}")))?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .unwrap_or_default();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse::<SocketAddr>().ok());
    match addr {
        Some(addr) => Ok((child, addr)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(CliError::Failed(format!("{what} did not start: `{}`", line.trim())))
        }
    }
}

/// One round at one rate, per path (direct, floor, serve): p50 and p99, the child's CPU per
/// call (0 for the direct path, which has no child), errors plus dropped calls, late sends.
struct Round {
    p: [(u64, u64); 3],
    cpu_us: [f64; 3],
    errors: [u64; 3],
    /// Calls the generator sent more than 2 ms after their slot.
    late: [u64; 3],
}

impl Round {
    fn new(measured: &[Measurement; 3], ticks: [u64; 3]) -> Self {
        let q = |m: &Measurement| (m.latencies.value_at_quantile(0.5), m.latencies.value_at_quantile(0.99));
        // Clock ticks are 10 ms on Linux.
        let cpu = |i: usize| ticks[i] as f64 * 10_000.0 / measured[i].latencies.len().max(1) as f64;
        Self {
            p: [q(&measured[0]), q(&measured[1]), q(&measured[2])],
            cpu_us: [0.0, cpu(1), cpu(2)],
            errors: [0, 1, 2].map(|i| measured[i].errors + measured[i].dropped),
            late: [0, 1, 2].map(|i| measured[i].late),
        }
    }
}

/// The median (the lower middle one for an even count).
fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0)
}

/// `/proc/loadavg`'s first three fields (Linux only).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Keep-alive HTTP/1.1 connections to one address, each carrying one call at a time.
///
/// A hand-written client keeps the generator's own CPU cost small, so that it disturbs the
/// proxy under test as little as possible on a small machine.
struct RawPool {
    addr: SocketAddr,
    request: Bytes,
    idle: Mutex<Vec<TcpStream>>,
}

impl RawPool {
    fn new(addr: SocketAddr, body: &[u8]) -> Arc<Self> {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        Arc::new(Self { addr, request: Bytes::from(request), idle: Mutex::new(Vec::new()) })
    }

    /// One call: `Ok(true)` for a 2xx answer read to its end.
    async fn call(&self) -> io::Result<bool> {
        // Like any HTTP client's pool, skip connections the server has closed while they
        // sat idle (serve closes a keep-alive connection idle past `header_read_timeout`).
        let pooled = loop {
            let Some(s) = self.idle.lock().pop() else { break None };
            let mut probe = [0u8; 1];
            if matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                break Some(s);
            }
        };
        let mut stream = match pooled {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(self.addr).await?;
                s.set_nodelay(true)?;
                s
            }
        };
        stream.write_all(&self.request).await?;
        let ok = read_response(&mut stream).await?;
        self.idle.lock().push(stream);
        Ok(ok)
    }
}

/// Reads one response with a `content-length` or chunked body; returns whether it was a 2xx.
async fn read_response(stream: &mut TcpStream) -> io::Result<bool> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let ok = head.split(' ').nth(1).is_some_and(|code| code.starts_with('2'));
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(len) => {
            while buf.len() < head_end + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        // Chunked: read to the last chunk.
        None => {
            while !buf[head_end..].ends_with(b"0\r\n\r\n") {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body cut"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    Ok(ok)
}

/// Sends `rate` calls per second for `duration`, open loop, and measures each call from the
/// moment it is sent to the end of its body.
async fn load(pool: &Arc<RawPool>, rate: u32, duration: Duration) -> Measurement {
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")));
    let errors = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let mut dropped = 0;
    let mut late = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let at = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(at).await;
        if Instant::now().duration_since(at) > Duration::from_millis(2) {
            late += 1;
        }
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let pool = Arc::clone(pool);
        let (latencies, errors) = (Arc::clone(&latencies), Arc::clone(&errors));
        tasks.spawn(async move {
            let sent = std::time::Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(10), pool.call()).await;
            let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
            match result {
                Ok(Ok(true)) => {
                    let _ = latencies.lock().record(took);
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        // Reap finished tasks as we go so that the set stays small.
        while let Some(done) = tasks.try_join_next() {
            let _ = done;
        }
    }
    while tasks.join_next().await.is_some() {}
    let latencies = std::mem::replace(&mut *latencies.lock(), Histogram::new(1).expect("valid"));
    Measurement { latencies, errors: errors.load(Ordering::Relaxed), dropped, late }
}

/// User plus system CPU time of a process in clock ticks, from `/proc` (Linux only).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn us(v: u64) -> String {
    if v >= 10_000 { format!("{:.1} ms", v as f64 / 1000.0) } else { format!("{v} µs") }
}

fn signed_us(a: u64, b: u64) -> String {
    signed(a as i64 - b as i64)
}

fn signed(d: i64) -> String {
    if d.abs() >= 10_000 { format!("{:+.1} ms", d as f64 / 1000.0) } else { format!("{d:+} µs") }
}
