//! DTLS for str0m over OpenSSL, so that Manifold shakes hands with peers presenting RSA
//! certificates as well as ECDSA ones.
//!
//! str0m 0.25 ships one DTLS stack, dimpl, which offers and verifies ECDSA only: a peer
//! whose certificate carries an RSA key (GStreamer's webrtcbin up to 1.22, older Java and
//! embedded stacks) cannot finish the handshake with it. This crate implements str0m's
//! [`DtlsProvider`]/[`DtlsInstance`] traits over OpenSSL (built from source by the
//! `openssl` crate, so no system library is needed) and keeps every other part of the
//! crypto provider (SRTP, hashes, STUN HMAC) as str0m has it.
//!
//! The instance is sans-IO like the rest of str0m: datagrams go in through
//! [`DtlsInstance::handle_packet`] and come out of [`DtlsInstance::poll_output`], never
//! through a socket. One thing OpenSSL does not let us hand in is its clock: the
//! handshake retransmission timer is measured by OpenSSL against the system clock. We
//! report the remaining time as a [`DtlsOutput::Timeout`] relative to the last `now` we
//! were given, so a caller running in real time sees correct retransmissions; a caller in
//! virtual time sees retransmissions only once real time has passed too (the core's
//! virtual-time tests lose packets only after the handshake).
//!
//! Sessions without a data channel can free OpenSSL's state once the handshake is done
//! ([`media_only_crypto_provider`], [`released`]): about 90 KB per session.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::raw::{c_int, c_long, c_uint};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dimpl::{CertificateError, SecurityError, TimeoutError};
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use str0m::config::CryptoProvider;
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial,
    ProtocolVersion, SrtpProfile,
};

mod released;

use released::{Incoming, Released};

/// str0m's crypto provider with the DTLS part replaced by OpenSSL.
pub fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        dtls_provider: &PROVIDER,
        ..str0m::crypto::from_feature_flags()
    }
}

/// [`crypto_provider`] for sessions that negotiate no data channel: once the handshake is
/// done (on an AES-GCM suite), each session frees its OpenSSL state and keeps only what
/// [`released`] lists. Application data is then neither sent nor received.
pub fn media_only_crypto_provider() -> CryptoProvider {
    CryptoProvider {
        dtls_provider: &MEDIA_ONLY,
        ..str0m::crypto::from_feature_flags()
    }
}

static PROVIDER: OpensslDtls = OpensslDtls {
    contexts: Mutex::new(Vec::new()),
    release: false,
};

static MEDIA_ONLY: OpensslDtls = OpensslDtls {
    contexts: Mutex::new(Vec::new()),
    release: true,
};

/// The largest datagram taken in: a DTLS record is at most 2^14 bytes of plaintext plus
/// header and expansion; anything bigger is not DTLS and is dropped before OpenSSL.
const MAX_DATAGRAM: usize = 18 * 1024;
/// Datagrams buffered before the handshake consumes them; more means a flood.
const MAX_QUEUED: usize = 64;
/// How many certificates' contexts are kept (a server uses one; tests use a few).
const CONTEXT_CACHE: usize = 4;
/// Handshake retransmission: first wait, then doubling up to the cap. OpenSSL gives up
/// after 12 timeouts without progress (about 40 s with these values).
const FIRST_RETRANSMIT: Duration = Duration::from_millis(500);
const MAX_RETRANSMIT: Duration = Duration::from_secs(4);
/// A `Timeout` this far ahead means "no timer": nothing is waiting to be retransmitted.
const IDLE: Duration = Duration::from_secs(24 * 3600);

// `DTLSv1_get_timeout` and `DTLSv1_handle_timeout` are C macros over `SSL_ctrl`, so
// openssl-sys has no binding for them; these are their command numbers from ssl.h.
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

unsafe extern "C" {
    /// OpenSSL ≥ 1.1.1: sets the callback that chooses the retransmission interval.
    fn DTLS_set_timer_cb(
        ssl: *mut openssl_sys::SSL,
        cb: Option<unsafe extern "C" fn(*mut openssl_sys::SSL, c_uint) -> c_uint>,
    );
}

/// The retransmission interval after `previous_us` (0 on the first flight).
unsafe extern "C" fn retransmit_interval(
    _ssl: *mut openssl_sys::SSL,
    previous_us: c_uint,
) -> c_uint {
    let first = FIRST_RETRANSMIT.as_micros() as c_uint;
    let cap = MAX_RETRANSMIT.as_micros() as c_uint;
    if previous_us == 0 {
        first
    } else {
        previous_us.saturating_mul(2).min(cap)
    }
}

/// Builds OpenSSL DTLS instances; one context per local certificate is kept, since
/// parsing the key and building the context is the costly part.
struct OpensslDtls {
    contexts: Mutex<Vec<(Vec<u8>, SslContext)>>,
    /// Whether its instances free OpenSSL after the handshake ([`media_only_crypto_provider`]).
    release: bool,
}

impl fmt::Debug for OpensslDtls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpensslDtls")
    }
}

impl OpensslDtls {
    fn context(&self, cert: &DtlsCert) -> Result<SslContext, ErrorStack> {
        // Poisoning only means another thread panicked while holding the cache; the
        // cache itself (a list of finished contexts) is still valid.
        let mut contexts = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, ctx)) = contexts.iter().find(|(der, _)| *der == cert.certificate) {
            return Ok(ctx.clone());
        }
        let ctx = build_context(cert)?;
        if contexts.len() >= CONTEXT_CACHE {
            contexts.remove(0);
        }
        contexts.push((cert.certificate.clone(), ctx.clone()));
        Ok(ctx)
    }
}

impl DtlsProvider for OpensslDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        // ECDSA P-256, as browsers make: the default provider generates exactly that.
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if dtls_version == DtlsVersion::Dtls13 {
            return Err(CryptoError::Other(
                "DTLS 1.3 is not offered by the OpenSSL DTLS provider".into(),
            ));
        }
        let other = |e: ErrorStack| CryptoError::Other(format!("OpenSSL DTLS: {e}"));
        let ctx = self.context(cert).map_err(other)?;
        let mut ssl = Ssl::new(&ctx).map_err(other)?;
        if let Some(mtu) = mtu {
            ssl.set_mtu(mtu as u32).map_err(other)?;
        }
        // SAFETY: `ssl` is a live SSL object and the callback is a plain function that
        // touches nothing but its arguments.
        unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(retransmit_interval)) };
        Ok(Box::new(OpensslInstance {
            state: State::Idle(ssl),
            now,
            events: VecDeque::new(),
            active: false,
            connected: false,
            closing: false,
            started: false,
            may_send: false,
            release: self.release,
            peer_closed: false,
        }))
    }
}

/// The context every instance of one certificate shares: DTLS 1.2, the SRTP profiles
/// str0m implements, a certificate required from the peer but not chain-checked (str0m
/// compares its fingerprint with the SDP's, which is how WebRTC authenticates it).
fn build_context(cert: &DtlsCert) -> Result<SslContext, ErrorStack> {
    let mut b = SslContext::builder(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    // Forward-secret AEAD suites for either kind of certificate, strongest first.
    b.set_cipher_list(
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
         ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
         ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
         ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",
    )?;
    b.set_groups_list("X25519:P-256:P-384")?;
    b.set_tlsext_use_srtp("SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")?;
    b.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    // The MTU is the one str0m gives; there is no socket to ask. No tickets or resumption:
    // every WebRTC handshake is fresh. No renegotiation either (str0m's own stack refuses
    // it too): the keys SRTP was given stay the keys.
    b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET | SslOptions::NO_RENEGOTIATION);
    b.set_session_cache_mode(openssl::ssl::SslSessionCacheMode::OFF);
    // Record buffers (16 KB or more each way) only while a record is in flight: after the
    // handshake a media-only session sends and receives no DTLS record until it closes.
    b.set_mode(openssl::ssl::SslMode::RELEASE_BUFFERS);
    let x509 = X509::from_der(&cert.certificate)?;
    b.set_certificate(&x509)?;
    let key = private_key(&cert.private_key)?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    Ok(b.build())
}

/// The key of a `DtlsCert`: PKCS#8 (what str0m and rcgen produce) or a traditional
/// SEC1/PKCS#1 DER key.
fn private_key(der: &[u8]) -> Result<PKey<Private>, ErrorStack> {
    PKey::private_key_from_pkcs8(der).or_else(|_| PKey::private_key_from_der(der))
}

/// The datagram pipe between OpenSSL and str0m: OpenSSL reads one whole datagram per
/// read and writes one whole datagram per write, as it does on a datagram BIO.
#[derive(Default)]
struct Wire {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                // OpenSSL reads into a buffer of the largest record; a datagram is never
                // longer (handle_packet drops longer ones), but do not panic if it were.
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    /// Before str0m has said which side we are.
    Idle(Ssl),
    Running(SslStream<Wire>),
    /// After the handshake of a media-only session: OpenSSL is freed; what is kept, and
    /// the datagrams still to send.
    Released(Box<Released>, VecDeque<Vec<u8>>),
    /// Taken out while switching from idle to running.
    Gone,
}

/// Output waiting for `poll_output`, after the datagrams.
enum Event {
    PeerCert(Vec<u8>),
    Connected,
    Keys(KeyingMaterial, SrtpProfile),
    Data(Vec<u8>),
    CloseNotify,
}

struct OpensslInstance {
    state: State,
    /// The latest time str0m gave us.
    now: Instant,
    events: VecDeque<Event>,
    active: bool,
    connected: bool,
    closing: bool,
    /// Whether the handshake has been driven once (the client's first flight is sent).
    started: bool,
    /// Whether the stream may hold records to send: set whenever OpenSSL is driven
    /// ([`Self::stream`]), cleared once `poll_output` finds none. str0m polls every
    /// session's DTLS on every output poll; without this each poll reaches into the BIO
    /// (`SSL_get_rbio`, `BIO_get_data`), about 6 % of a worker's time in bench (c).
    may_send: bool,
    /// Whether to free OpenSSL once the handshake is done.
    release: bool,
    /// Whether the peer's close_notify (or an alert) was reported after the release.
    peer_closed: bool,
}

impl fmt::Debug for OpensslInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpensslInstance")
            .field("active", &self.active)
            .field("connected", &self.connected)
            .field("closing", &self.closing)
            .field("released", &matches!(self.state, State::Released(..)))
            .finish_non_exhaustive()
    }
}

/// What str0m is told when OpenSSL fails the handshake (the details go to the debug log):
/// the TLS alert `handshake_failure`.
fn handshake_failure() -> DtlsImplError {
    DtlsImplError::SecurityError(SecurityError::FatalAlert { description: 40 })
}

impl OpensslInstance {
    /// The running stream, to drive OpenSSL with (which may queue records to send).
    fn stream(&mut self) -> Option<&mut SslStream<Wire>> {
        self.may_send = true;
        match &mut self.state {
            State::Running(s) => Some(s),
            _ => None,
        }
    }

    /// Drive OpenSSL with what has arrived: the handshake first, then application data.
    fn pump(&mut self) -> Result<(), DtlsImplError> {
        if !self.connected {
            let Some(stream) = self.stream() else {
                return Ok(());
            };
            match stream.do_handshake() {
                Ok(()) => {
                    self.on_connected()?;
                    if self.release {
                        self.free_openssl();
                    }
                }
                Err(e) if wants_io(e.code()) => return Ok(()),
                Err(e) => return Err(self.fail("handshake", &e)),
            }
        }
        thread_local! {
            /// Plaintext of one record; shared by the thread's instances, not kept by each.
            static SCRATCH: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(vec![0u8; MAX_DATAGRAM]);
        }
        SCRATCH.with_borrow_mut(|buf| {
            loop {
                let Some(stream) = self.stream() else {
                    return Ok(());
                };
                match stream.ssl_read(buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => self.events.push_back(Event::Data(buf[..n].to_vec())),
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                        self.events.push_back(Event::CloseNotify);
                        return Ok(());
                    }
                    Err(e) if wants_io(e.code()) => return Ok(()),
                    Err(e) => return Err(self.fail("read", &e)),
                }
            }
        })
    }

    fn on_connected(&mut self) -> Result<(), DtlsImplError> {
        let State::Running(stream) = &self.state else {
            return Ok(());
        };
        let ssl = stream.ssl();
        let cert = ssl.peer_certificate().and_then(|c| c.to_der().ok()).ok_or(
            DtlsImplError::CertificateError(if self.active {
                CertificateError::NoServerCertificateReceived
            } else {
                CertificateError::NoClientCertificateReceived
            }),
        )?;
        let profile = match ssl.selected_srtp_profile().map(|p| p.id()) {
            Some(SrtpProfileId::SRTP_AEAD_AES_256_GCM) => SrtpProfile::AEAD_AES_256_GCM,
            Some(SrtpProfileId::SRTP_AEAD_AES_128_GCM) => SrtpProfile::AEAD_AES_128_GCM,
            Some(SrtpProfileId::SRTP_AES128_CM_SHA1_80) => SrtpProfile::AES128_CM_SHA1_80,
            _ => {
                tracing::debug!("DTLS peer negotiated no SRTP profile we offer");
                return Err(handshake_failure());
            }
        };
        let mut keys = vec![0u8; profile.keying_material_len()];
        ssl.export_keying_material(&mut keys, "EXTRACTOR-dtls_srtp", None)
            .map_err(|e| {
                tracing::debug!("DTLS keying material export failed: {e}");
                handshake_failure()
            })?;
        // The certificate first: str0m checks its fingerprint against the SDP before it
        // takes the keys.
        self.events.push_back(Event::PeerCert(cert));
        self.events.push_back(Event::Connected);
        self.events
            .push_back(Event::Keys(KeyingMaterial::new(&keys), profile));
        self.connected = true;
        Ok(())
    }

    /// Free OpenSSL's state, keeping what [`Released`] lists, right after the handshake:
    /// what OpenSSL has queued then is our final flight. A suite [`Released`] does not
    /// handle keeps OpenSSL, as does a failure to make the close_notify.
    fn free_openssl(&mut self) {
        let State::Running(stream) = &mut self.state else {
            return;
        };
        // As the server we sent the last flight: it is what is queued now, not yet polled.
        let last_flight: Vec<Vec<u8>> = if self.active {
            Vec::new()
        } else {
            stream.get_ref().outgoing.iter().cloned().collect()
        };
        if !self.active && last_flight.is_empty() {
            return;
        }
        let Some(mut kept) = Released::new(stream.ssl(), self.active, last_flight) else {
            tracing::debug!("DTLS suite not handled after release; OpenSSL kept");
            return;
        };
        // Our close_notify now, while OpenSSL can make it: the next record of our epoch,
        // sent only when the session closes.
        let queued = stream.get_ref().outgoing.len();
        if let Err(e) = stream.shutdown() {
            tracing::debug!("DTLS close_notify not made: {e}; OpenSSL kept");
            return;
        }
        let outgoing = &mut stream.get_mut().outgoing;
        kept.set_farewell(outgoing.drain(queued..).collect());
        let outgoing = std::mem::take(outgoing);
        // Dropping the stream frees the SSL object and its buffers.
        self.state = State::Released(Box::new(kept), outgoing);
        self.may_send = true;
    }

    /// The datagrams waiting to be polled, in whichever state holds them.
    fn outgoing(&mut self) -> Option<&mut VecDeque<Vec<u8>>> {
        match &mut self.state {
            State::Running(stream) => Some(&mut stream.get_mut().outgoing),
            State::Released(_, outgoing) => Some(outgoing),
            _ => None,
        }
    }

    /// A datagram after the release: the peer's alert closes, a retransmitted final
    /// flight is answered with ours, anything else is dropped.
    fn after_release(&mut self, packet: &[u8]) {
        let State::Released(kept, outgoing) = &mut self.state else {
            return;
        };
        match kept.classify(packet) {
            Incoming::Closed if !self.peer_closed => {
                self.peer_closed = true;
                self.events.push_back(Event::CloseNotify);
            }
            Incoming::Resend if outgoing.len() < MAX_QUEUED => {
                outgoing.extend(kept.resend());
                self.may_send = true;
            }
            _ => tracing::debug!(len = packet.len(), "DTLS datagram after release dropped"),
        }
    }

    fn fail(&self, what: &str, e: &openssl::ssl::Error) -> DtlsImplError {
        tracing::debug!(active = self.active, "DTLS {what} failed: {e}");
        handshake_failure()
    }

    /// When OpenSSL wants to retransmit, if it is waiting for the peer.
    fn timer(&mut self) -> Option<Duration> {
        if self.connected {
            return None;
        }
        let stream = self.stream()?;
        let mut tv = libc_timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` to the pointer.
        let running = unsafe {
            openssl_sys::SSL_ctrl(
                stream.ssl().as_ptr(),
                DTLS_CTRL_GET_TIMEOUT,
                0,
                (&mut tv as *mut libc_timeval).cast::<c_void>(),
            )
        };
        (running == 1).then(|| {
            Duration::from_secs(tv.tv_sec.max(0) as u64)
                + Duration::from_micros(tv.tv_usec.max(0) as u64)
        })
    }
}

/// `struct timeval` as OpenSSL writes it on the platforms we build for.
#[repr(C)]
struct libc_timeval {
    tv_sec: c_long,
    tv_usec: c_long,
}

fn wants_io(code: ErrorCode) -> bool {
    code == ErrorCode::WANT_READ || code == ErrorCode::WANT_WRITE
}

impl DtlsInstance for OpensslInstance {
    fn set_active(&mut self, active: bool) {
        self.active = active;
        if let State::Idle(_) = self.state {
            let State::Idle(mut ssl) = std::mem::replace(&mut self.state, State::Gone) else {
                return;
            };
            if active {
                ssl.set_connect_state();
            } else {
                ssl.set_accept_state();
            }
            match SslStream::new(ssl, Wire::default()) {
                Ok(stream) => {
                    self.state = State::Running(stream);
                    self.may_send = true;
                }
                Err(e) => tracing::debug!("DTLS stream setup failed: {e}"),
            }
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        if let State::Released(..) = self.state {
            if packet.len() <= MAX_DATAGRAM {
                self.after_release(packet);
            }
            return Ok(());
        }
        let Some(stream) = self.stream() else {
            return Ok(());
        };
        let wire = stream.get_mut();
        if packet.len() > MAX_DATAGRAM || wire.incoming.len() >= MAX_QUEUED {
            // Not DTLS, or a flood: dropped like any datagram DTLS cannot use (RFC 6347
            // §4.1.2.7), rather than ending the session over it.
            tracing::debug!(len = packet.len(), "DTLS datagram dropped");
            return Ok(());
        }
        wire.incoming.push_back(packet.to_vec());
        self.started = true;
        self.pump()
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if self.may_send {
            if let Some(outgoing) = self.outgoing()
                && let Some(d) = outgoing.front()
            {
                if d.len() > buf.len() {
                    return DtlsOutput::BufferTooSmall { needed: d.len() };
                }
                let d = outgoing.pop_front().unwrap_or_default();
                buf[..d.len()].copy_from_slice(&d);
                return DtlsOutput::Packet(&buf[..d.len()]);
            }
            self.may_send = false;
        }
        if let Some(e) = self.events.front() {
            let needed = match e {
                Event::PeerCert(d) | Event::Data(d) => d.len(),
                _ => 0,
            };
            if needed > buf.len() {
                return DtlsOutput::BufferTooSmall { needed };
            }
            match self.events.pop_front() {
                Some(Event::PeerCert(d)) => {
                    buf[..d.len()].copy_from_slice(&d);
                    return DtlsOutput::PeerCert(&buf[..d.len()]);
                }
                Some(Event::Data(d)) => {
                    buf[..d.len()].copy_from_slice(&d);
                    return DtlsOutput::ApplicationData(&buf[..d.len()]);
                }
                Some(Event::Connected) => return DtlsOutput::Connected,
                Some(Event::Keys(k, p)) => return DtlsOutput::KeyingMaterial(k, p),
                Some(Event::CloseNotify) => return DtlsOutput::CloseNotify,
                None => {}
            }
        }
        let wait = self.timer().unwrap_or(IDLE);
        DtlsOutput::Timeout(self.now + wait)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = self.now.max(now);
        if self.connected || self.stream().is_none() {
            return Ok(());
        }
        if !self.started {
            // The first call after set_active: a client sends its hello.
            self.started = true;
            return self.pump();
        }
        let Some(stream) = self.stream() else {
            return Ok(());
        };
        // SAFETY: DTLS_CTRL_HANDLE_TIMEOUT takes no pointer argument.
        let r = unsafe {
            openssl_sys::SSL_ctrl(
                stream.ssl().as_ptr(),
                DTLS_CTRL_HANDLE_TIMEOUT,
                0,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            tracing::debug!(
                active = self.active,
                "DTLS handshake gave up retransmitting"
            );
            return Err(DtlsImplError::Timeout(TimeoutError::Handshake));
        }
        Ok(())
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        if !self.connected || self.closing || data.is_empty() {
            return Ok(0);
        }
        let Some(stream) = self.stream() else {
            return Ok(0);
        };
        match stream.ssl_write(data) {
            Ok(_) => Ok(data.len()),
            Err(e) if wants_io(e.code()) => Ok(0),
            Err(e) => Err(self.fail("write", &e)),
        }
    }

    fn is_active(&self) -> bool {
        self.active
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.connected.then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.closing && !self.is_closed()
    }

    fn is_closed(&self) -> bool {
        self.closing
            && match &self.state {
                State::Running(s) => s.get_ref().outgoing.is_empty(),
                State::Released(_, outgoing) => outgoing.is_empty(),
                _ => true,
            }
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if self.closing {
            return Ok(());
        }
        self.closing = true;
        if !self.connected {
            return Ok(());
        }
        if let State::Released(kept, outgoing) = &mut self.state {
            outgoing.extend(kept.take_farewell());
            self.may_send = true;
            return Ok(());
        }
        if let Some(stream) = self.stream() {
            // Queues close_notify on the wire; the answer, if any, is not awaited.
            if let Err(e) = stream.shutdown() {
                tracing::debug!("DTLS close_notify not sent: {e}");
            }
        }
        Ok(())
    }
}
