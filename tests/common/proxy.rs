//! A TCP forwarder on a free loopback port, with optional per-direction
//! latency and traffic counters. Everything stops when the `Proxy` is dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Chunks in flight per direction: bounds memory (and, with a delay, the
/// throughput to `QUEUE × 64 KiB / delay`, like a TCP window).
const QUEUE: usize = 64;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    connections: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// Open connections: both sockets, so that they can be cut.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
}

pub struct Proxy {
    addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards to `target` (`host:port`) without delay.
    pub fn start(target: &str) -> Proxy {
        Proxy::with_delay(target, Duration::ZERO, Duration::ZERO)
    }

    /// Emulates a round-trip time: half of `rtt` each way.
    pub fn with_rtt(target: &str, rtt: Duration) -> Proxy {
        Proxy::with_delay(target, rtt / 2, rtt / 2)
    }

    /// Every chunk is forwarded `up` (client → server) or `down`
    /// (server → client) after it was read.
    pub fn with_delay(target: &str, up: Duration, down: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared::default());
        let (target, sh) = (target.to_string(), shared.clone());
        let accept = thread::spawn(move || {
            for (id, client) in listener.incoming().enumerate() {
                if sh.stop.load(SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                sh.connections.fetch_add(1, SeqCst);
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let id = id as u64;
                sh.open.lock().unwrap().insert(
                    id,
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                );
                let sh = sh.clone();
                thread::spawn(move || {
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let sh_up = sh.clone();
                    let up = thread::spawn(move || pump(client, server, up, &sh_up.bytes_up));
                    pump(s2, c2, down, &sh.bytes_down);
                    let _ = up.join();
                    sh.open.lock().unwrap().remove(&id);
                });
            }
        });
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT` to give to clients instead of the target.
    pub fn addr(&self) -> &str {
        &self.addr
    }
    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(SeqCst)
    }
    /// Bytes forwarded client → server.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(SeqCst)
    }
    /// Bytes forwarded server → client.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(SeqCst)
    }
    /// Cuts every open connection (both sides see a reset/EOF).
    pub fn close_connections(&self) {
        for (client, server) in self.shared.open.lock().unwrap().values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        let _ = TcpStream::connect(&self.addr); // wakes up accept()
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.close_connections();
    }
}

/// Copies `from` → `to`, each chunk written `delay` after it was read; then
/// half-closes `to`. A reader thread keeps reading while the writer waits.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, counter: &AtomicU64) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(QUEUE);
    let from2 = from.try_clone().unwrap();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    for (due, chunk) in rx {
        thread::sleep(due.saturating_duration_since(Instant::now()));
        // counted before writing, so a client that saw the bytes sees them counted
        counter.fetch_add(chunk.len() as u64, SeqCst);
        if to.write_all(&chunk).is_err() {
            let _ = from2.shutdown(Shutdown::Read); // unblocks the reader
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = reader.join();
}
