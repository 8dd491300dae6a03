//! The media engine: a few threads, each driving many clients' sockets and `Rtc`s with one
//! poller, so thousands of clients cost thousands of sockets but only a handful of threads.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::client::{Client, ClientReport};

const WAKER: Token = Token(usize::MAX);

enum Cmd {
    Add(Box<Client>),
    Snapshot(Sender<Vec<ClientReport>>),
    Stop(Sender<Vec<ClientReport>>),
}

struct Worker {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    join: JoinHandle<()>,
}

/// Threads driving clients.
pub struct Engine {
    workers: Vec<Worker>,
    next: usize,
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
            workers.push(Worker { tx, waker, join });
        }
        Ok(Engine { workers, next: 0 })
    }

    /// Hand a client to the next thread.
    pub fn add(&mut self, client: Client) {
        let w = &self.workers[self.next % self.workers.len()];
        self.next += 1;
        if w.tx.send(Cmd::Add(Box::new(client))).is_ok() {
            let _ = w.waker.wake();
        }
    }

    /// Reports of every client, now.
    pub fn snapshot(&self) -> Vec<ClientReport> {
        self.collect(Cmd::Snapshot)
    }

    /// Stop every client and thread; the final reports.
    pub fn stop(self) -> Vec<ClientReport> {
        let reports = self.collect(Cmd::Stop);
        for w in self.workers {
            let _ = w.join.join();
        }
        reports
    }

    fn collect(&self, cmd: fn(Sender<Vec<ClientReport>>) -> Cmd) -> Vec<ClientReport> {
        let mut out = Vec::new();
        for w in &self.workers {
            let (tx, rx) = bounded(1);
            if w.tx.send(cmd(tx)).is_ok() {
                let _ = w.waker.wake();
                if let Ok(r) = rx.recv_timeout(Duration::from_secs(10)) {
                    out.extend(r);
                }
            }
        }
        out
    }
}

fn run(mut poll: Poll, rx: Receiver<Cmd>) {
    let mut clients: Vec<Client> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        let now = Instant::now();
        let next = clients
            .iter()
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
            if let Some(c) = clients.get_mut(ev.token().0) {
                c.handle_readable();
            }
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Add(mut c) => {
                    let token = Token(clients.len());
                    if poll
                        .registry()
                        .register(c.socket_mut(), token, Interest::READABLE)
                        .is_ok()
                    {
                        c.handle_time(Instant::now());
                        clients.push(*c);
                    }
                }
                Cmd::Snapshot(reply) => {
                    let _ = reply.send(clients.iter().map(Client::report).collect());
                }
                Cmd::Stop(reply) => {
                    for c in &mut clients {
                        c.stop();
                    }
                    let _ = reply.send(clients.iter().map(Client::report).collect());
                    return;
                }
            }
        }
        let now = Instant::now();
        for c in clients.iter_mut().filter(|c| c.is_alive()) {
            if c.deadline() <= now {
                c.handle_time(now);
            }
        }
    }
}
