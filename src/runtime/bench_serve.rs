//! `bench --serve`: the appliance on loopback against a bare receive loop, in one run.
//!
//! First a bare `recvmmsg` drain loop (the same socket setup and receive call as
//! `serve`, nothing else) and then `serve` itself (1 receiver, 1 worker, files sink)
//! each receive the same capture from `send`. The receiving side is pinned to CPU 0 and
//! `send` to CPU 1, so the two phases compete for the same cores the same way. What is
//! reported is what each received of what was sent, the queue and kernel drops, the
//! rates over send's own clock, and the CPU time the receiving side spent per datagram.
//!
//! Why CPU time: on loopback the whole network stack runs in the sender (about 94 % of
//! `send`'s time is kernel), so `send` tops out near 100-200k datagrams/s in this VM
//! and both receivers take all of it. Their rates are then `send`'s rate in each phase,
//! which drifts with the VM by ±30 % between two phases of one run. The receiving
//! core's CPU time over `send`'s duration says how close each came to its limit. It is
//! not a capacity to extrapolate from: at these rates datagrams arrive one by one and
//! each costs a wakeup of the receiving threads, which a faster sender would batch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one `bench --serve` run measured.
#[derive(Clone, Debug, Default)]
pub struct ServeBench {
    /// What `send` reported: datagrams and their rate (its own clock).
    pub sent: u64,
    pub send_rate: f64,
    /// Datagrams the bare `recvmmsg` loop drained, and its rate over the send time.
    pub bare_received: u64,
    pub bare_rate: f64,
    pub bare_kernel_drops: u64,
    pub serve_sent: u64,
    pub serve_send_rate: f64,
    /// Datagrams `serve` received, packets its queues dropped, kernel drops meanwhile.
    pub serve_received: u64,
    pub serve_rate: f64,
    pub serve_queue_drops: u64,
    pub serve_kernel_drops: u64,
    /// CPU time the receiving side used while `send` ran, in ns: the drain thread; all
    /// of `serve`'s threads (receiver, worker, writer, sink).
    pub bare_cpu_ns: u64,
    pub serve_cpu_ns: u64,
}

impl ServeBench {
    /// Share of the receiving core used while `send` ran (CPU time over send's duration).
    pub fn bare_busy(&self) -> f64 {
        self.bare_cpu_ns as f64 * self.send_rate / 1e9 / self.sent.max(1) as f64
    }

    pub fn serve_busy(&self) -> f64 {
        self.serve_cpu_ns as f64 * self.serve_send_rate / 1e9 / self.serve_sent.max(1) as f64
    }

    /// Receiving CPU per datagram received, in ns.
    pub fn bare_ns_per_datagram(&self) -> f64 {
        self.bare_cpu_ns as f64 / self.bare_received.max(1) as f64
    }

    pub fn serve_ns_per_datagram(&self) -> f64 {
        self.serve_cpu_ns as f64 / self.serve_received.max(1) as f64
    }
}

/// CPU time (user + system) of process `pid`, all its threads, from /proc; 10 ms
/// resolution (clock ticks), which over seconds of traffic is below 1 %.
fn process_cpu_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// Pins the calling thread (and threads and processes it starts later) to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A child `mirrorflow` pinned to `cpu` (the affinity is set between fork and exec).
fn pinned_command(cpu: usize) -> Result<std::process::Command, String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    // SAFETY: the closure only calls sched_setaffinity, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            pin_to(cpu);
            Ok(())
        });
    }
    Ok(cmd)
}

/// Runs `send` on `cpu`; returns (datagrams, datagrams/s) as it reports them.
fn run_send(capture: &Path, port: u16, loops: u64, cpu: usize) -> Result<(u64, f64), String> {
    let out = pinned_command(cpu)?
        .arg("send")
        .arg(capture)
        .args([
            "--to",
            &format!("127.0.0.1:{port}"),
            "--loop",
            &loops.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run send: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("send failed: {text}"));
    }
    // "mirrorflow send: N datagrams (B bytes) to ADDR in S s, R datagrams/s; ..."
    let n = text
        .split("send: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| format!("cannot read send's report: {text}"))?;
    let rate = text
        .split(" datagrams/s")
        .next()
        .and_then(|r| r.rsplit(' ').next())
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| format!("cannot read send's rate: {text}"))?;
    Ok((n, rate))
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

/// The bare loop on CPU 0, then `serve` (1 receiver, 1 worker) on CPU 0, each fed by
/// `send` on CPU 1 with the same capture.
pub fn serve_bench(capture: &Path, loops: u64) -> Result<ServeBench, String> {
    use crate::ingest::udp::{kernel_rcvbuf_errors, BatchReceiver, TunnelSocket};
    let mut r = ServeBench::default();

    // 1. Bare recvmmsg drain loop: the same socket setup and receive call, no decap.
    let sock = TunnelSocket::bind([127, 0, 0, 1].into(), 0, 32 << 20).map_err(|e| e.to_string())?;
    let port = sock.port;
    let done = Arc::new(AtomicBool::new(false));
    let drain = std::thread::spawn({
        let done = done.clone();
        move || {
            pin_to(0);
            let mut rx = BatchReceiver::new(sock);
            let mut n = 0u64;
            let cpu0 = crate::telemetry::thread_cpu_time();
            loop {
                match rx.recv() {
                    Ok((_, d)) if !d.is_empty() => n += d.len() as u64,
                    _ if done.load(Ordering::Relaxed) => {
                        return (n, crate::telemetry::thread_cpu_time() - cpu0);
                    }
                    _ => {}
                }
            }
        }
    });
    let k0 = kernel_rcvbuf_errors().unwrap_or(0);
    let (sent, rate) = run_send(capture, port, loops, 1)?;
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    let (received, cpu) = drain.join().map_err(|_| "drain thread panicked")?;
    r.bare_received = received;
    r.bare_cpu_ns = cpu.as_nanos() as u64;
    r.bare_kernel_drops = kernel_rcvbuf_errors().unwrap_or(0).saturating_sub(k0);
    r.sent = sent;
    r.send_rate = rate;
    // Over send's own duration: what the loop kept up with.
    r.bare_rate = r.bare_received as f64 * rate / sent.max(1) as f64;

    // 2. The appliance.
    let dir = std::env::temp_dir().join(format!("mirrorflow-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cfg = dir.join("mirrorflow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\nvxlan-port = 0\ngeneve-port = 0\n[serve]\nlisten = \"127.0.0.1\"\n\
             control = \"127.0.0.1:0\"\nreceivers = 1\nworkers = 1\nrecv-buffer = 33554432\n\
             allow-sources = [\"127.0.0.0/8\"]\n[sink]\nkind = \"files\"\ndirectory = {:?}\n",
            dir.join("records").display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    let stderr_path = dir.join("stderr");
    let mut child = pinned_command(0)?
        .args(["serve", "--config"])
        .arg(&cfg)
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start serve: {e}"))?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (port, control) = loop {
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if let Some(l) = err.lines().find(|l| l.contains("receiving VXLAN on")) {
                let port = l
                    .split("VXLAN on ")
                    .nth(1)
                    .and_then(|x| x.split([',', ' ']).next())
                    .and_then(|hp| hp.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or("cannot read serve's port")?;
                let control = l.rsplit("http://").next().unwrap_or("").trim().to_string();
                break (port, control);
            }
            if Instant::now() > deadline {
                return Err(format!("serve did not start: {err}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let k0 = kernel_rcvbuf_errors().unwrap_or(0);
        let cpu0 = process_cpu_ns(child.id());
        let (sent, rate) = run_send(capture, port, loops, 1)?;
        // Counters are published about once a second.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut body;
        loop {
            std::thread::sleep(Duration::from_millis(500));
            body = http_get(&control, "/metrics")?;
            let got = metric(&body, "mirrorflow_datagrams_received_total");
            if got >= sent || Instant::now() > deadline {
                break;
            }
        }
        r.serve_sent = sent;
        r.serve_send_rate = rate;
        r.serve_received = metric(&body, "mirrorflow_datagrams_received_total");
        // Includes the metrics polls above (a few ms), as the bare loop's includes its
        // 300 ms of idle timeouts after `send`.
        if let (Some(a), Some(b)) = (cpu0, process_cpu_ns(child.id())) {
            r.serve_cpu_ns = b.saturating_sub(a);
        }
        r.serve_queue_drops = metric(&body, "mirrorflow_queue_drops_total");
        r.serve_kernel_drops = kernel_rcvbuf_errors().unwrap_or(0).saturating_sub(k0);
        r.serve_rate = r.serve_received as f64 * rate / sent.max(1) as f64;
        Ok(())
    })();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|_| r)
}

pub fn render_serve(r: &ServeBench) -> String {
    let pct = |got: u64, of: u64| 100.0 * got as f64 / of.max(1) as f64;
    let (bare_ns, serve_ns) = (r.bare_ns_per_datagram(), r.serve_ns_per_datagram());
    format!(
        "# serve on loopback: send pinned to CPU 1, receiver pinned to CPU 0\n\
         bare recvmmsg loop: {} of {} datagrams ({:.1}%; {:.0}/s while send ran at {:.0}/s), kernel drops {}; \
         receiving CPU {:.2} us/datagram\n\
         serve (1 receiver, 1 worker): {} of {} datagrams ({:.1}%; {:.0}/s while send ran at {:.0}/s), queue drops {}, kernel drops {}; \
         receiving CPU {:.2} us/datagram (all threads)\n\
         serve / bare loop: {:.1}% (rates over send's clock, which differs between the phases)\n\
         received of sent: serve {:.1}%, bare loop {:.1}%\n\
         receiving core busy while send ran: serve {:.0}%, bare loop {:.0}%\n",
        r.bare_received,
        r.sent,
        pct(r.bare_received, r.sent),
        r.bare_rate,
        r.send_rate,
        r.bare_kernel_drops,
        bare_ns / 1e3,
        r.serve_received,
        r.serve_sent,
        pct(r.serve_received, r.serve_sent),
        r.serve_rate,
        r.serve_send_rate,
        r.serve_queue_drops,
        r.serve_kernel_drops,
        serve_ns / 1e3,
        100.0 * r.serve_rate / r.bare_rate.max(1e-9),
        pct(r.serve_received, r.serve_sent),
        pct(r.bare_received, r.sent),
        100.0 * r.serve_busy(),
        100.0 * r.bare_busy(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's CPU time is read from /proc, and work done moves it.
    #[test]
    fn process_cpu_time_is_read_and_grows() {
        let pid = std::process::id();
        let before = process_cpu_ns(pid).expect("/proc/<pid>/stat");
        // Spin for 120 ms of this thread's own CPU time (not wall time: other tests may
        // share the cores).
        let t = crate::telemetry::thread_cpu_time();
        let mut x = 0u64;
        while crate::telemetry::thread_cpu_time() - t < Duration::from_millis(120) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu_ns(pid).unwrap();
        assert!(after >= before + 50_000_000, "{before} -> {after}");
    }
}
