//! The media engine: a few threads, each driving many clients' sockets and `Rtc`s with one
//! poller, so thousands of clients cost thousands of sockets but only a handful of threads.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::client::Client;
use crate::snapshot::ClientReport;

const WAKER: Token = Token(usize::MAX);

/// How long a caller waits for an engine thread to answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

enum Cmd {
    Add(Box<Client>),
    Remove(String, Sender<Vec<ClientReport>>),
    PausePublishers(Sender<Vec<ClientReport>>),
    Snapshot(Sender<Vec<ClientReport>>),
    Stop(Sender<Vec<ClientReport>>),
}

struct Worker {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    join: Mutex<Option<JoinHandle<()>>>,
}

/// Threads driving clients.
pub struct Engine {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

impl Engine {
    /// Start `threads` engine threads.
    pub fn start(threads: usize) -> io::Result<Engine> {
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = unbounded();
            let join = std::thread::Builder::new()
                .name(format!("loadgen-{i}"))
                .spawn(move || run(poll, rx))?;
            workers.push(Worker {
                tx,
                waker,
                join: Mutex::new(Some(join)),
            });
        }
        Ok(Engine {
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// Hand a client to the next thread.
    pub fn add(&self, client: Client) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let w = &self.workers[n % self.workers.len()];
        if w.tx.send(Cmd::Add(Box::new(client))).is_ok() {
            let _ = w.waker.wake();
        }
    }

    /// Stop the client labelled `label` and take it out; its final report.
    pub fn remove(&self, label: &str) -> Option<ClientReport> {
        self.collect(|tx| Cmd::Remove(label.to_owned(), tx))
            .into_iter()
            .next()
    }

    /// Stop generating media in every publisher (to let what is in flight arrive before
    /// the final count); reports of every client.
    pub fn pause_publishers(&self) -> Vec<ClientReport> {
        self.collect(Cmd::PausePublishers)
    }

    /// Reports of every client, now.
    pub fn snapshot(&self) -> Vec<ClientReport> {
        self.collect(Cmd::Snapshot)
    }

    /// Stop every client and thread; the final reports (empty when already stopped).
    pub fn stop(&self) -> Vec<ClientReport> {
        let reports = self.collect(Cmd::Stop);
        for w in &self.workers {
            if let Some(j) = w.join.lock().map_or(None, |mut j| j.take()) {
                let _ = j.join();
            }
        }
        reports
    }

    fn collect(&self, cmd: impl Fn(Sender<Vec<ClientReport>>) -> Cmd) -> Vec<ClientReport> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for w in &self.workers {
            let (tx, rx) = bounded(1);
            if w.tx.send(cmd(tx)).is_ok() {
                let _ = w.waker.wake();
                pending.push(rx);
            }
        }
        for rx in pending {
            if let Ok(r) = rx.recv_timeout(REPLY_TIMEOUT) {
                out.extend(r);
            }
        }
        out
    }
}

fn run(mut poll: Poll, rx: Receiver<Cmd>) {
    // Slots stay put so that a slot's index is its socket's poll token.
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        let next = clients
            .iter()
            .flatten()
            .filter(|c| c.is_alive())
            .map(Client::deadline)
            .min();
        let timeout = next.map_or(Duration::from_millis(100), |d| {
            d.saturating_duration_since(now)
                .min(Duration::from_millis(100))
        });
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::error!(error = %e, "loadgen poll failed");
            return;
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            if let Some(Some(c)) = clients.get_mut(ev.token().0) {
                c.handle_readable();
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Add(mut c) => {
                    let slot = clients
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(clients.len());
                    if poll
                        .registry()
                        .register(c.socket_mut(), Token(slot), Interest::READABLE)
                        .is_ok()
                    {
                        c.handle_time(Instant::now());
                        if slot == clients.len() {
                            clients.push(Some(*c));
                        } else {
                            clients[slot] = Some(*c);
                        }
                    }
                }
                Cmd::Remove(label, reply) => {
                    let mut out = Vec::new();
                    for slot in &mut clients {
                        if slot.as_ref().is_some_and(|c| c.label() == label) {
                            let mut c = slot.take().expect("checked just above");
                            c.stop();
                            let _ = poll.registry().deregister(c.socket_mut());
                            let mut report = c.report();
                            report.left_early = true;
                            out.push(report);
                        }
                    }
                    let _ = reply.send(out);
                }
                Cmd::PausePublishers(reply) => {
                    for c in clients.iter_mut().flatten() {
                        c.set_paused(true);
                    }
                    let _ = reply.send(clients.iter().flatten().map(Client::report).collect());
                }
                Cmd::Snapshot(reply) => {
                    let _ = reply.send(clients.iter().flatten().map(Client::report).collect());
                }
                Cmd::Stop(reply) => {
                    for c in clients.iter_mut().flatten() {
                        c.stop();
                    }
                    let _ = reply.send(clients.iter().flatten().map(Client::report).collect());
                    return;
                }
            }
        }
        let now = Instant::now();
        for c in clients.iter_mut().flatten().filter(|c| c.is_alive()) {
            if c.deadline() <= now {
                c.handle_time(now);
            }
        }
    }
}
