//! The connection: handshake, the reader task, the writer, and the session.
//!
//! One tokio `UnixStream` is split in two. The read half belongs to a reader
//! task that frames lines, routes replies to the waiting caller by `id` and
//! copies events to the listeners whose filter they pass. The write half sits
//! behind an async mutex; a caller holds it only while its request goes out,
//! with `sendmsg(2)` so that descriptors can ride along as `SCM_RIGHTS`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use nix::sys::socket::{ControlMessage, MsgFlags, Shutdown, sendmsg, shutdown};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tracing::{debug, trace, warn};

use crate::codec::{FrameError, QmpCodec};
use crate::command::{Command, default_timeout};
use crate::commands::{AddFd, AddFdInfo, GetFd};
use crate::error::{ProtocolError, QmpError};
use crate::events::{EventFilter, EventListener};
use crate::redact::{LoggedArguments, may_carry_secret};
use crate::wire::{
    ErrorBody, Event, Greeting, Incoming, QemuVersion, arguments_of, encode_request_prefix,
    finish_request, parse_incoming,
};

/// Settings for a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    max_line_length: usize,
    handshake_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            max_line_length: 8 << 20,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

impl ConnectOptions {
    /// The defaults: lines up to 8 MiB (QEMU 7.2's `query-qmp-schema` reply
    /// is about 200 KiB), 5 s each for the greeting and `qmp_capabilities`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest line QEMU may send, in bytes. A longer line is a
    /// [`ProtocolError::LineTooLong`] and closes the connection.
    pub fn max_line_length(mut self, bytes: usize) -> Self {
        self.max_line_length = bytes;
        self
    }

    /// How long to wait for the greeting, and then for the reply to
    /// `qmp_capabilities`.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// Why the connection ended; handed to everyone still waiting on it.
#[derive(Debug, Clone)]
pub(crate) enum CloseReason {
    /// QEMU closed the socket between two messages.
    Eof,
    /// Reading or writing failed, or the stream ended mid-message.
    Io(Arc<io::Error>),
    /// QEMU sent something that is not QMP.
    Protocol(ProtocolError),
    /// The last [`Client`] handle was dropped.
    Dropped,
}

impl CloseReason {
    fn to_error(&self) -> QmpError {
        match self {
            CloseReason::Eof | CloseReason::Dropped => QmpError::Disconnected { source: None },
            CloseReason::Io(e) => QmpError::Disconnected {
                source: Some(e.clone()),
            },
            CloseReason::Protocol(p) => QmpError::Protocol { source: p.clone() },
        }
    }
}

impl From<FrameError> for CloseReason {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => CloseReason::Io(Arc::new(e)),
            FrameError::Truncated => CloseReason::Io(Arc::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of a message",
            ))),
            FrameError::Protocol(p) => CloseReason::Protocol(p),
        }
    }
}

type Lines = FramedRead<OwnedReadHalf, QmpCodec>;

/// Read the next message, skipping blank lines.
async fn read_message(lines: &mut Lines) -> Result<Incoming, CloseReason> {
    loop {
        let line = match lines.next().await {
            None => return Err(CloseReason::Eof),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(line)) => line,
        };
        trace!(line = %line, "QMP <-");
        if line.trim().is_empty() {
            continue;
        }
        return parse_incoming(&line).map_err(CloseReason::Protocol);
    }
}

/// The write half; requests go out whole, one at a time.
#[derive(Debug)]
struct Writer {
    half: OwnedWriteHalf,
    /// A request was cut off mid-way (an error, or its caller gave up during
    /// a partial write); the byte stream is out of step for good.
    torn: bool,
    /// The session's shared state, once there is a session: a torn request
    /// ends it at once, so that every waiter hears of it.
    shared: Option<Arc<Shared>>,
}

fn torn_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "a request was interrupted mid-write",
    )
}

/// Ends the connection if a request is left half-written, however `send`
/// is left (error, or its future dropped at a deadline).
struct TearGuard<'a> {
    torn: &'a mut bool,
    socket: RawFd,
    shared: Option<&'a Shared>,
    partial: bool,
}

impl Drop for TearGuard<'_> {
    fn drop(&mut self) {
        if !self.partial {
            return;
        }
        *self.torn = true;
        if let Err(e) = shutdown(self.socket, Shutdown::Both) {
            debug!(error = %e, "shutdown of the QMP socket failed");
        }
        if let Some(shared) = self.shared {
            shared.close(CloseReason::Io(Arc::new(torn_error())));
        }
    }
}

impl Writer {
    fn new(half: OwnedWriteHalf) -> Self {
        Writer {
            half,
            torn: false,
            shared: None,
        }
    }

    /// Send `bytes`, attaching `fds` to the first byte.
    async fn send(&mut self, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
        if self.torn {
            return Err(torn_error());
        }
        let stream: &UnixStream = self.half.as_ref();
        let socket = stream.as_raw_fd();
        let mut tear = TearGuard {
            torn: &mut self.torn,
            socket,
            shared: self.shared.as_deref(),
            partial: false,
        };
        let mut sent = 0;
        while sent < bytes.len() {
            let rest = &bytes[sent..];
            let fds = if sent == 0 { fds } else { &[] };
            let n = stream
                .async_io(Interest::WRITABLE, || send_chunk(socket, rest, fds))
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
            tear.partial = sent < bytes.len();
        }
        Ok(())
    }
}

/// One non-blocking `sendmsg(2)`, with `SCM_RIGHTS` if `fds` is not empty.
fn send_chunk(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    // MSG_NOSIGNAL: a peer that went away is an EPIPE, not a SIGPIPE.
    Ok(sendmsg::<()>(
        socket,
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?)
}

fn disconnected(e: io::Error) -> QmpError {
    QmpError::Disconnected {
        source: Some(Arc::new(e)),
    }
}

fn refused(command: &str, body: ErrorBody) -> QmpError {
    if body.class == "CommandNotFound" {
        QmpError::NotSupported {
            command: command.to_owned(),
            desc: body.desc,
        }
    } else {
        QmpError::Refused {
            command: command.to_owned(),
            class: body.class,
            desc: body.desc,
        }
    }
}

/// Decode a `return` value into a command's reply type.
///
/// A command without a reply (`Returns = ()`) accepts any object, so that
/// members a newer QEMU adds do not break it.
pub(crate) fn decode_return<T: DeserializeOwned>(command: &str, raw: Value) -> Result<T, QmpError> {
    match T::deserialize(&raw) {
        Ok(v) => Ok(v),
        Err(source) => {
            if raw.is_object()
                && let Ok(v) = T::deserialize(&Value::Null)
            {
                return Ok(v);
            }
            Err(QmpError::BadReply {
                command: command.to_owned(),
                raw,
                source,
            })
        }
    }
}

/// A connection that has read QEMU's greeting but not yet negotiated
/// capabilities: it can only [`negotiate`](Handshake::negotiate).
#[derive(Debug)]
pub struct Handshake {
    lines: Lines,
    writer: Writer,
    greeting: Greeting,
    options: ConnectOptions,
}

impl Handshake {
    /// Connect to the QMP socket at `path` and read the greeting.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Handshake, QmpError> {
        Self::connect_with(path, ConnectOptions::default()).await
    }

    /// [`connect`](Self::connect) with settings.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        options: ConnectOptions,
    ) -> Result<Handshake, QmpError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Self::from_stream_with(stream, options).await
    }

    /// Read the greeting from an already-connected stream (e.g. one end of a
    /// socketpair whose other end QEMU got as `-chardev socket,fd=N`).
    pub async fn from_stream(stream: UnixStream) -> Result<Handshake, QmpError> {
        Self::from_stream_with(stream, ConnectOptions::default()).await
    }

    /// [`from_stream`](Self::from_stream) with settings.
    pub async fn from_stream_with(
        stream: UnixStream,
        options: ConnectOptions,
    ) -> Result<Handshake, QmpError> {
        let (read, write) = stream.into_split();
        let mut lines = FramedRead::new(read, QmpCodec::new(options.max_line_length));
        let wait = async {
            loop {
                match read_message(&mut lines).await.map_err(|r| r.to_error())? {
                    Incoming::Greeting(greeting) => return Ok(greeting),
                    Incoming::Event(event) => {
                        debug!(event = %event.name, "QMP event before the greeting ignored");
                    }
                    Incoming::Reply { id, result } => {
                        let raw = match result {
                            Ok(ret) => serde_json::json!({"return": ret, "id": id}),
                            Err(e) => serde_json::json!({
                                "error": {"class": e.class, "desc": e.desc}, "id": id
                            }),
                        };
                        return Err(QmpError::from(ProtocolError::NotAGreeting { raw }));
                    }
                }
            }
        };
        let greeting = tokio::time::timeout(options.handshake_timeout, wait)
            .await
            .map_err(|_| QmpError::Timeout {
                command: "QMP greeting".to_owned(),
                timeout: options.handshake_timeout,
            })??;
        debug!(version = %greeting.version.qemu, package = %greeting.version.package, "QMP greeting");
        Ok(Handshake {
            lines,
            writer: Writer::new(write),
            greeting,
            options,
        })
    }

    /// QEMU's greeting.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Leave capabilities negotiation mode (`qmp_capabilities`, enabling no
    /// optional capability) and start the session.
    pub async fn negotiate(self) -> Result<Client, QmpError> {
        let Handshake {
            mut lines,
            mut writer,
            greeting,
            options,
        } = self;
        const COMMAND: &str = "qmp_capabilities";
        let exchange = async {
            writer
                .send(b"{\"execute\":\"qmp_capabilities\",\"id\":0}", &[])
                .await
                .map_err(disconnected)?;
            loop {
                match read_message(&mut lines).await.map_err(|r| r.to_error())? {
                    Incoming::Reply { id, result } if id == Some(Value::from(0)) => {
                        return result.map(drop).map_err(|e| refused(COMMAND, e));
                    }
                    Incoming::Reply { id, .. } => {
                        debug!(?id, "QMP reply to an unknown id ignored");
                    }
                    Incoming::Event(event) => {
                        debug!(event = %event.name, "QMP event during negotiation ignored");
                    }
                    Incoming::Greeting(_) => debug!("second QMP greeting ignored"),
                }
            }
        };
        tokio::time::timeout(options.handshake_timeout, exchange)
            .await
            .map_err(|_| QmpError::Timeout {
                command: COMMAND.to_owned(),
                timeout: options.handshake_timeout,
            })??;
        Ok(Client::start(lines, writer, greeting))
    }
}

/// What a waiting caller receives: QEMU's answer, or why none will come.
type ReplyFor = Result<Result<Value, ErrorBody>, CloseReason>;

/// A waiting caller's share of a reply.
type ReplySlot = oneshot::Sender<ReplyFor>;

#[derive(Debug)]
struct ListenerSlot {
    id: u64,
    filter: EventFilter,
    tx: mpsc::UnboundedSender<Event>,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    /// Ids whose reply reached its caller, for reuse (last in, first out).
    ///
    /// QEMU parses QMP one byte per main-loop iteration, so every byte of a
    /// request costs latency; reuse keeps ids one or two digits long on a
    /// connection that lives for months. Ids of commands whose caller gave
    /// up are never reused, so a late reply cannot reach the wrong caller.
    free_ids: Vec<u64>,
    pending: HashMap<u64, ReplySlot>,
    next_listener: u64,
    listeners: Vec<ListenerSlot>,
    closed: Option<CloseReason>,
}

/// What the reader task, the callers and the listeners share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    closed: watch::Sender<bool>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            state: Mutex::new(State {
                // 0 was qmp_capabilities.
                next_id: 1,
                free_ids: Vec::new(),
                pending: HashMap::new(),
                next_listener: 0,
                listeners: Vec::new(),
                closed: None,
            }),
            closed: watch::Sender::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if some did, the state is
        // still consistent (every update is a single insert or remove).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error for anyone arriving after the connection ended.
    pub(crate) fn close_error(&self) -> QmpError {
        match &self.lock().closed {
            Some(reason) => reason.to_error(),
            None => QmpError::Disconnected { source: None },
        }
    }

    fn register(&self) -> Result<(u64, oneshot::Receiver<ReplyFor>), QmpError> {
        let mut state = self.lock();
        if let Some(reason) = &state.closed {
            return Err(reason.to_error());
        }
        let id = match state.free_ids.pop() {
            Some(id) => id,
            None => {
                state.next_id += 1;
                state.next_id - 1
            }
        };
        let (tx, rx) = oneshot::channel();
        state.pending.insert(id, tx);
        Ok((id, rx))
    }

    /// The caller stopped waiting; its id is retired.
    fn forget(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// The caller got its reply (the reader already removed the slot).
    fn recycle(&self, id: u64) {
        self.lock().free_ids.push(id);
    }

    fn add_listener(self: &Arc<Self>, filter: EventFilter) -> EventListener {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        let id = state.next_listener;
        state.next_listener += 1;
        // After the end, the sender is dropped at once and the listener
        // reports the connection's error.
        if state.closed.is_none() {
            state.listeners.push(ListenerSlot {
                id,
                filter: filter.clone(),
                tx,
            });
        }
        drop(state);
        EventListener::new(rx, Arc::clone(self), id, filter)
    }

    pub(crate) fn remove_listener(&self, id: u64) {
        self.lock().listeners.retain(|l| l.id != id);
    }

    fn route_reply(&self, id: Option<Value>, result: Result<Value, ErrorBody>) {
        let Some(id) = id.as_ref().and_then(Value::as_u64) else {
            warn!(?id, "QMP reply without an id of ours dropped");
            return;
        };
        let slot = self.lock().pending.remove(&id);
        match slot {
            Some(tx) => {
                // The caller may have given up in the meantime.
                let _ = tx.send(Ok(result));
            }
            None => debug!(id, "QMP reply to a timed-out or abandoned command dropped"),
        }
    }

    fn dispatch(&self, event: Event) {
        debug!(event = %event.name, data = %event.data, "QMP event");
        let state = self.lock();
        for listener in state.listeners.iter().filter(|l| l.filter.matches(&event)) {
            // A listener being dropped right now unregisters itself.
            let _ = listener.tx.send(event.clone());
        }
    }

    fn close(&self, reason: CloseReason) {
        let (pending, listeners) = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason.clone());
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.listeners),
            )
        };
        match &reason {
            CloseReason::Eof => debug!("QMP connection closed by QEMU"),
            CloseReason::Dropped => debug!("QMP client dropped"),
            CloseReason::Io(e) => debug!(error = %e, "QMP connection broke"),
            CloseReason::Protocol(p) => warn!(error = %p, "QMP protocol violation; closing"),
        }
        for (_, tx) in pending {
            let _ = tx.send(Err(reason.clone()));
        }
        drop(listeners);
        self.closed.send_replace(true);
    }
}

/// The reader task: route every message until the stream ends.
async fn read_loop(mut lines: Lines, shared: Arc<Shared>) {
    let reason = loop {
        match read_message(&mut lines).await {
            Ok(Incoming::Reply { id, result }) => shared.route_reply(id, result),
            Ok(Incoming::Event(event)) => shared.dispatch(event),
            Ok(Incoming::Greeting(_)) => debug!("second QMP greeting ignored"),
            Err(reason) => break reason,
        }
    };
    if let CloseReason::Protocol(_) = reason {
        // The stream is out of step: end it in both directions now, so QEMU
        // sees the disconnect without waiting for the client to be dropped.
        let socket = lines.get_ref().as_ref().as_raw_fd();
        if let Err(e) = shutdown(socket, Shutdown::Both) {
            debug!(error = %e, "shutdown of the QMP socket failed");
        }
    }
    shared.close(reason);
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<Writer>,
    reader: JoinHandle<()>,
    greeting: Greeting,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.shared.close(CloseReason::Dropped);
    }
}

/// A QMP session: capabilities negotiated, commands allowed.
///
/// Cheap to clone; clones share the connection, and commands from several
/// tasks may be in flight at once. The connection closes when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Settles a caller's id when the call ends: recycled if the reply arrived,
/// retired (slot removed, never reused) if the caller stopped waiting.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
    answered: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.answered {
            self.shared.recycle(self.id);
        } else {
            self.shared.forget(self.id);
        }
    }
}

/// The raw line of a request for trace logs, secrets redacted.
struct LoggedRequest<'a> {
    command: &'a str,
    line: &'a [u8],
}

impl std::fmt::Display for LoggedRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if may_carry_secret(self.command) {
            write!(
                f,
                "{{\"execute\":{:?},\"arguments\":{}, ...}}",
                self.command,
                LoggedArguments {
                    command: self.command,
                    json: arguments_of(self.line),
                }
            )
        } else {
            f.write_str(&String::from_utf8_lossy(self.line))
        }
    }
}

impl Client {
    /// Connect to the QMP socket at `path`, read the greeting and negotiate.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, QmpError> {
        Handshake::connect(path).await?.negotiate().await
    }

    fn start(lines: Lines, mut writer: Writer, greeting: Greeting) -> Client {
        let shared = Arc::new(Shared::new());
        writer.shared = Some(Arc::clone(&shared));
        let reader = tokio::spawn(read_loop(lines, Arc::clone(&shared)));
        Client {
            inner: Arc::new(Inner {
                shared,
                writer: tokio::sync::Mutex::new(writer),
                reader,
                greeting,
            }),
        }
    }

    /// QEMU's greeting.
    pub fn greeting(&self) -> &Greeting {
        &self.inner.greeting
    }

    /// QEMU's version, from the greeting.
    pub fn version(&self) -> QemuVersion {
        self.inner.greeting.version.qemu
    }

    /// Run a typed command. Await the returned [`Execute`]; before that,
    /// [`timeout`](Execute::timeout) overrides the deadline and
    /// [`with_fd`](Execute::with_fd) attaches descriptors.
    pub fn execute<C: Command>(&self, command: C) -> Execute<'_, C::Returns> {
        Execute {
            client: self,
            command: Cow::Borrowed(C::NAME),
            request: encode_request_prefix(C::NAME, &command),
            timeout: C::TIMEOUT,
            fds: Vec::new(),
            returns: PhantomData,
        }
    }

    /// Run a command by name with untyped arguments (`Value::Null` or an
    /// empty object for none). The deadline is [`default_timeout`]`(name)`.
    pub fn execute_raw(&self, name: impl Into<String>, arguments: Value) -> Execute<'_, Value> {
        let name = name.into();
        Execute {
            client: self,
            request: encode_request_prefix(&name, &arguments),
            timeout: default_timeout(&name),
            command: Cow::Owned(name),
            fds: Vec::new(),
            returns: PhantomData,
        }
    }

    /// Pass `fd` to QEMU under the name `fdname` (`getfd` with `SCM_RIGHTS`).
    /// QEMU gets its own copy; `fd` stays open here.
    pub async fn get_fd(&self, fdname: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.execute(GetFd::new(fdname)).with_fd(fd).await
    }

    /// Pass `fd` to QEMU into an fd set (`add-fd` with `SCM_RIGHTS`); a new
    /// set unless `add` names one. QEMU gets its own copy.
    pub async fn add_fd(&self, add: AddFd, fd: BorrowedFd<'_>) -> Result<AddFdInfo, QmpError> {
        self.execute(add).with_fd(fd).await
    }

    /// Receive the events that pass `filter` from now on.
    ///
    /// Register the listener *before* sending the command that causes the
    /// event; QEMU may send the event before the command's reply.
    pub fn listen(&self, filter: EventFilter) -> EventListener {
        self.inner.shared.add_listener(filter)
    }

    /// Receive every event from now on.
    pub fn events(&self) -> EventListener {
        self.listen(EventFilter::all())
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.shared.closed.borrow()
    }

    /// Wait until the connection ends, and return what commands now fail
    /// with: [`QmpError::Disconnected`] without a source after QEMU closed
    /// the socket cleanly (e.g. after `quit`).
    pub async fn closed(&self) -> QmpError {
        let mut rx = self.inner.shared.closed.subscribe();
        // The sender lives as long as `self`; the wait cannot fail.
        let _ = rx.wait_for(|closed| *closed).await;
        self.inner.shared.close_error()
    }

    async fn call(
        &self,
        command: &str,
        mut request: Vec<u8>,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let shared = &*self.inner.shared;
        let (id, reply) = shared.register()?;
        let mut guard = PendingGuard {
            shared,
            id,
            answered: false,
        };
        debug!(
            id,
            command,
            arguments = %LoggedArguments { command, json: arguments_of(&request) },
            fds = fds.len(),
            "QMP command"
        );
        finish_request(&mut request, id);
        trace!(line = %LoggedRequest { command, line: &request }, "QMP ->");
        let raw_fds: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let exchange = async {
            self.inner
                .writer
                .lock()
                .await
                .send(&request, &raw_fds)
                .await
                .map_err(disconnected)?;
            let reply = reply.await;
            // Whatever came, the reader has removed the slot.
            guard.answered = true;
            match reply {
                Ok(Ok(Ok(value))) => Ok(value),
                Ok(Ok(Err(body))) => Err(refused(command, body)),
                Ok(Err(reason)) => Err(reason.to_error()),
                Err(_) => Err(shared.close_error()),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                debug!(id, command, ?timeout, "QMP command timed out");
                Err(QmpError::Timeout {
                    command: command.to_owned(),
                    timeout,
                })
            }
        }
    }
}

/// A command about to be sent; `.await` it to send it and get the reply.
///
/// Dropping it (or the future) before the reply arrives abandons the command;
/// the late reply is discarded.
#[must_use = "a command is only sent when awaited"]
pub struct Execute<'a, T> {
    client: &'a Client,
    command: Cow<'static, str>,
    request: Result<Vec<u8>, serde_json::Error>,
    timeout: Duration,
    fds: Vec<BorrowedFd<'a>>,
    returns: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Execute<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execute")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .field("fds", &self.fds)
            .finish_non_exhaustive()
    }
}

impl<'a, T> Execute<'a, T> {
    /// Wait at most `timeout` for the reply instead of the command's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send `fd` with the command as `SCM_RIGHTS` (for `getfd`, `add-fd`).
    /// May be repeated. QEMU gets its own copy; `fd` stays open here.
    pub fn with_fd(mut self, fd: BorrowedFd<'a>) -> Self {
        self.fds.push(fd);
        self
    }
}

impl<'a, T> IntoFuture for Execute<'a, T>
where
    T: DeserializeOwned + Send + 'a,
{
    type Output = Result<T, QmpError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, QmpError>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let request = self.request.map_err(|source| QmpError::Encode {
                command: self.command.to_string(),
                source,
            })?;
            let raw = self
                .client
                .call(&self.command, request, &self.fds, self.timeout)
                .await?;
            decode_return(&self.command, raw)
        })
    }
}
