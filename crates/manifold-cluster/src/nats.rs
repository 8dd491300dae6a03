//! The bus over NATS (core NATS: no JetStream, nothing stored). Each subscription is a
//! NATS subscription whose messages a task moves into the subscriber's bounded queue,
//! counting what does not fit; subjects are checked as the in-memory bus checks them.
//!
//! async-nats reconnects by itself and subscribes again. While it is disconnected:
//! - messages others publish are lost for this node's subscriptions (core NATS keeps
//!   nothing for an absent subscriber);
//! - what this node publishes waits in the client's buffer ([`NatsOptions::publish_buffer`]
//!   messages) and goes out on reconnection; once the buffer is full, [`Bus::publish`] waits
//!   at most [`NatsOptions::timeout`] and fails with [`ClusterError::Unavailable`];
//! - what was written to the socket but not yet read by the server when it went away is
//!   lost;
//! - [`Bus::subscribe`] fails after the timeout (it waits for the server to confirm).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use futures_util::{StreamExt, TryFutureExt};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Mutex, mpsc};

use crate::bus::check_subject;
use crate::{
    BoxFuture, Bus, BusMessage, ClusterError, MAX_SUBSCRIPTIONS, Subscription, redact_url,
};

/// How a [`NatsBus`] talks to its server.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Longest one operation may wait: connecting, a publish while the buffer is full, a
    /// subscription's confirmation.
    pub timeout: Duration,
    /// Messages (and subscription changes) the client holds while disconnected.
    pub publish_buffer: usize,
    /// Messages held per subscription between the socket and the task moving them into the
    /// subscriber's queue; past it NATS counts a slow consumer, and so does
    /// [`Bus::dropped`].
    pub subscription_buffer: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            timeout: Duration::from_secs(2),
            publish_buffer: 2048,
            subscription_buffer: 1024,
        }
    }
}

/// A node's connection to the cluster's NATS.
pub struct NatsBus {
    client: Client,
    /// A subject only this connection hears, and its subscription: see [`NatsBus::settle`].
    echo_subject: String,
    echo: Mutex<async_nats::Subscriber>,
    dropped: Arc<AtomicU64>,
    subscriptions: Arc<AtomicUsize>,
    timeout: Duration,
    /// The server's URL without credentials, for errors.
    server: String,
}

impl NatsBus {
    /// Connect to the NATS at `url` (`nats://[user:password@]host:port`; the other servers
    /// of a NATS cluster are learned from it); fails when it does not answer within the
    /// timeout.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self, ClusterError> {
        let server = redact_url(url);
        let addr: ServerAddr = url
            .parse()
            .map_err(|e| ClusterError::Malformed(format!("NATS URL {server}: {e}")))?;
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        let events = server.clone();
        let connect = ConnectOptions::new()
            .connection_timeout(options.timeout)
            .client_capacity(options.publish_buffer.max(1))
            .subscription_capacity(options.subscription_buffer.max(1))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50 << attempts.min(5)).min(Duration::from_secs(1))
            })
            .event_callback(move |event| {
                let counted = counted.clone();
                let server = events.clone();
                async move {
                    match event {
                        Event::SlowConsumer(_) => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::Disconnected => tracing::warn!(
                            %server,
                            "NATS disconnected: reconnecting; messages published to this \
                             node meanwhile are lost"
                        ),
                        Event::Connected => tracing::info!(%server, "NATS connected"),
                        other => tracing::warn!(%server, event = %other, "NATS"),
                    }
                }
            });
        let connect = connect.connect(addr).map_err(|e| e.to_string());
        let client = bounded(&server, options.timeout, "connect", connect).await?;
        let echo_subject = format!("_manifold.echo.{:032x}", rand::random::<u128>());
        let echo = client
            .subscribe(echo_subject.clone())
            .map_err(|e| e.to_string());
        let echo = bounded(&server, options.timeout, "subscribe", echo).await?;
        Ok(NatsBus {
            client,
            echo_subject,
            echo: Mutex::new(echo),
            dropped,
            subscriptions: Arc::new(AtomicUsize::new(0)),
            timeout: options.timeout,
            server,
        })
    }

    /// Return once the server has read everything this connection sent before: it hands a
    /// message on the echo subject back only after reading the subscriptions before it.
    /// (`flush` only writes to the socket.)
    async fn settle(&self) -> Result<(), ClusterError> {
        let mut echo = self.echo.lock().await;
        let nonce = rand::random::<u64>().to_be_bytes();
        let round_trip = async {
            self.client
                .publish(self.echo_subject.clone(), nonce.to_vec().into())
                .await
                .map_err(|e| e.to_string())?;
            // An echo left by an earlier call that timed out is skipped.
            while let Some(m) = echo.next().await {
                if m.payload.as_ref() == nonce {
                    return Ok(());
                }
            }
            Err("the connection closed".to_owned())
        };
        bounded(&self.server, self.timeout, "subscribe", round_trip).await
    }
}

/// Await `op` for at most `timeout`; its failure, or the wait running out, is
/// [`ClusterError::Unavailable`].
async fn bounded<T>(
    server: &str,
    timeout: Duration,
    what: &str,
    op: impl Future<Output = Result<T, String>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ClusterError::Unavailable(format!(
            "NATS at {server}: {what}: {e}"
        ))),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "NATS at {server}: {what}: not done within {timeout:?}"
        ))),
    }
}

impl Bus for NatsBus {
    fn publish(
        &self,
        subject: String,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<(), ClusterError>> {
        Box::pin(async move {
            check_subject(&subject, false)?;
            let max = self.client.max_payload();
            if payload.len() > max {
                return Err(ClusterError::Malformed(format!(
                    "a payload of {} bytes, over the NATS server's {max}",
                    payload.len()
                )));
            }
            // Waits only when the client's buffer is full (the server unreachable).
            let publish = self.client.publish(subject, payload.into());
            let publish = publish.map_err(|e| e.to_string());
            bounded(&self.server, self.timeout, "publish", publish).await
        })
    }

    fn subscribe(
        &self,
        pattern: String,
        capacity: usize,
    ) -> BoxFuture<'_, Result<Subscription, ClusterError>> {
        Box::pin(async move {
            check_subject(&pattern, true)?;
            let slot = SubscriptionSlot::take(&self.subscriptions).ok_or_else(|| {
                ClusterError::Unavailable(format!("at most {MAX_SUBSCRIPTIONS} subscriptions"))
            })?;
            let subscribe = self.client.subscribe(pattern).map_err(|e| e.to_string());
            let subscriber = bounded(&self.server, self.timeout, "subscribe", subscribe).await?;
            // From now on, what anyone publishes reaches the subscription.
            self.settle().await?;
            let (tx, rx) = mpsc::channel(capacity.max(1));
            tokio::spawn(forward(subscriber, tx, self.dropped.clone(), slot));
            Ok(Subscription { rx })
        })
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One of the [`MAX_SUBSCRIPTIONS`], given back on drop.
struct SubscriptionSlot(Arc<AtomicUsize>);

impl SubscriptionSlot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SUBSCRIPTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| SubscriptionSlot(count.clone()))
    }
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Move a NATS subscription's messages into the subscriber's queue until either side ends;
/// dropping the NATS subscriber unsubscribes.
async fn forward(
    mut subscriber: async_nats::Subscriber,
    tx: mpsc::Sender<BusMessage>,
    dropped: Arc<AtomicU64>,
    _slot: SubscriptionSlot,
) {
    loop {
        let message = tokio::select! {
            m = subscriber.next() => m,
            () = tx.closed() => return,
        };
        let Some(m) = message else { return };
        let message = BusMessage {
            subject: m.subject.to_string(),
            payload: m.payload.to_vec(),
        };
        match tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => return,
        }
    }
}
