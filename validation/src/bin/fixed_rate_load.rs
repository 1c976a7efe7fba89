//! Open-loop, fixed-rate HTTP/1.1 load generator for the service's read endpoints.
//!
//! Request `i` is due at `start + i / rate`, whether or not earlier requests have been
//! answered (open loop), and its latency is measured from that due time, so a slow server
//! cannot slow the generator down and hide its own queueing (no coordinated omission). The
//! requests rotate over the given paths and are carried by a pool of keep-alive connections.
//!
//! ```text
//! fixed_rate_load --address 127.0.0.1:8080 --rate 200 --seconds 30 \
//!     --header "Authorization: Bearer TOKEN" --path /api/v1/jobs --path /ready
//! ```
//!
//! Prints one JSON object: requests sent and answered, errors, statuses, achieved throughput,
//! and latency percentiles in milliseconds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Options {
    address: String,
    rate: f64,
    seconds: f64,
    connections: usize,
    headers: Vec<String>,
    paths: Vec<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: fixed_rate_load --address HOST:PORT --rate PER_SECOND --seconds N \
         [--connections N] [--header 'Name: value']... --path /p [--path /q]..."
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut options = Options {
        address: String::new(),
        rate: 0.0,
        seconds: 0.0,
        connections: 16,
        headers: Vec::new(),
        paths: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let number = |v: &str| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0);
        match flag.as_str() {
            "--address" => options.address = value,
            "--rate" => options.rate = number(&value).unwrap_or_else(|| usage()),
            "--seconds" => options.seconds = number(&value).unwrap_or_else(|| usage()),
            "--connections" => {
                options.connections = value.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| usage())
            }
            "--header" => options.headers.push(value),
            "--path" => options.paths.push(value),
            _ => usage(),
        }
    }
    if options.address.is_empty() || options.rate == 0.0 || options.seconds == 0.0 || options.paths.is_empty()
    {
        usage();
    }
    options
}

/// One answered (or failed) request.
struct Outcome {
    latency: Duration,
    status: Option<u16>,
}

/// A keep-alive connection that reconnects after an error.
struct Connection {
    address: String,
    reader: Option<BufReader<TcpStream>>,
}

impl Connection {
    fn stream(&mut self) -> std::io::Result<&mut BufReader<TcpStream>> {
        if self.reader.is_none() {
            let stream = TcpStream::connect(&self.address)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.reader = Some(BufReader::new(stream));
        }
        Ok(self.reader.as_mut().expect("just connected"))
    }

    /// Sends one GET and reads the whole answer; returns the status.
    fn get(&mut self, request: &[u8]) -> std::io::Result<u16> {
        let result = self.exchange(request);
        if result.is_err() {
            self.reader = None;
        }
        result
    }

    fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        let reader = self.stream()?;
        reader.get_mut().write_all(request)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().map_err(std::io::Error::other)?,
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if chunked {
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(std::io::Error::other)?;
                let mut chunk = vec![0u8; size + 2];
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            std::io::copy(&mut reader.by_ref().take(length as u64), &mut std::io::sink())?;
        }
        if close {
            self.reader = None;
        }
        Ok(status)
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

fn main() {
    let options = parse_options();
    let host = options.address.clone();
    let requests: Vec<Vec<u8>> = options
        .paths
        .iter()
        .map(|path| {
            let mut text = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n");
            for header in &options.headers {
                text.push_str(header);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            text.into_bytes()
        })
        .collect();
    let requests = Arc::new(requests);
    let total = (options.rate * options.seconds).round() as usize;
    let (due_sender, due_receiver) = mpsc::channel::<(usize, Instant)>();
    let due_receiver = Arc::new(Mutex::new(due_receiver));
    let (done_sender, done_receiver) = mpsc::channel::<Outcome>();
    let workers: Vec<_> = (0..options.connections)
        .map(|_| {
            let due_receiver = due_receiver.clone();
            let done_sender = done_sender.clone();
            let requests = requests.clone();
            let mut connection = Connection { address: options.address.clone(), reader: None };
            std::thread::spawn(move || {
                loop {
                    let next = due_receiver.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((index, due)) = next else { break };
                    let status = connection.get(&requests[index % requests.len()]).ok();
                    let _ = done_sender.send(Outcome { latency: due.elapsed(), status });
                }
            })
        })
        .collect();
    drop(done_sender);

    // The dispatcher: each request is released at its due time, never later because of the
    // server (the workers queue it if every connection is busy, and that wait counts).
    let start = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    for index in 0..total {
        let due = start + interval.mul_f64(index as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if due_sender.send((index, due)).is_err() {
            break;
        }
    }
    drop(due_sender);
    let mut latencies = Vec::with_capacity(total);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = 0usize;
    for outcome in done_receiver {
        match outcome.status {
            Some(status) => {
                *statuses.entry(status.to_string()).or_default() += 1;
                if !(200..300).contains(&status) {
                    errors += 1;
                }
            }
            None => {
                errors += 1;
                *statuses.entry("io-error".into()).or_default() += 1;
            }
        }
        latencies.push(outcome.latency);
    }
    let elapsed = start.elapsed().as_secs_f64();
    for worker in workers {
        let _ = worker.join();
    }
    latencies.sort();
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("\"{s}\": {n}")).collect();
    println!(
        "{{\"target_rate\": {}, \"seconds\": {}, \"connections\": {}, \"sent\": {total}, \"answered\": {}, \
         \"errors\": {errors}, \"statuses\": {{{}}}, \"throughput_per_second\": {:.1}, \
         \"latency_ms\": {{\"p50\": {:.2}, \"p90\": {:.2}, \"p99\": {:.2}, \"p999\": {:.2}, \"max\": {:.2}}}}}",
        options.rate,
        options.seconds,
        options.connections,
        latencies.len(),
        statuses.join(", "),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0),
    );
}
